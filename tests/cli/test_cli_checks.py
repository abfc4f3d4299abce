"""Checks the CLI makes before any work, and how it prints: finite --mean/--std, a capped
--size, the right format in the --duration error, escaped names, singular/plural wording,
SIGINT working when the shell started the command with it ignored."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli
from layerscope.cli import _common
from layerscope.errors import plural


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: the check must come first."""
    import layerscope.models

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(layerscope.models, "load_model", refuse)
    monkeypatch.setattr(layerscope.models, "build_for_listing", refuse)


@pytest.mark.parametrize("flag", ["--std", "--mean"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_mean_and_std_must_be_finite_before_any_model_is_loaded(
    no_model: None, flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "tour", f"{flag}={value}", "-o", str(tmp_path / "a.gif"))
    assert code == 2 and f"{flag} values must be finite numbers, not {value}" in err, err
    assert "model" not in err.lower()
    code, _, err = run_cli(capsys, "layers", "--model", "vgg16", flag, "0.5", "0.5", "1e400")  # overflows to inf
    assert code == 2 and "must be finite" in err, err


def test_std_must_be_positive(no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "tour", "--std", "0", "-o", str(tmp_path / "a.gif"))
    assert code == 2 and "--std values must be positive, not 0.0" in err, err


def test_a_huge_size_is_refused_before_any_model_is_loaded(
    no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["tour", "-o", str(tmp_path / "a.gif")], ["layers"], ["grid", "-o", str(tmp_path / "g.png")]):
        code, _, err = run_cli(capsys, *command, "--size", "20000")
        assert code == 2, (command, err)
        assert "--size 20000 is more than 4096 pixels per side" in err and "--allow-large-size" in err
        assert "MemoryError" not in err
    code, _, err = run_cli(capsys, "tour", "--size", "224", "20000", "-o", str(tmp_path / "a.gif"))
    assert code == 2 and "--size 20000" in err
    code, _, err = run_cli(capsys, "train-head", "--size", "20000", "-o", str(tmp_path / "w.safetensors"))
    assert code == 2 and "--allow-large-size" in err, err


def test_allow_large_size_lifts_the_cap(no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "tour", "--size", "5000", "--allow-large-size", "-o", str(tmp_path / "a.gif"))
    assert code == 1 and "a model was loaded before" in err  # past the check, at the (refused) model load


@pytest.mark.parametrize("ext", ["mp4", "html", "webp", "npz"])
def test_the_duration_error_does_not_blame_gif_for_other_formats(
    no_model: None, ext: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "tour", "--duration", "5", "-o", str(tmp_path / f"a.{ext}"))
    assert code == 2 and "the frame duration must be between 10 and 3600000 ms, not 5" in err, err
    assert "GIF" not in err


def test_control_characters_in_names_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "a\x1b[31mred\x07.png"
    code, out, err = run_cli(capsys, "tour", str(evil), "-o", str(tmp_path / "t.npz"))
    assert code != 0 and "\x1b" not in err and "\x07" not in err
    assert "a\\x1b[31mred\\x07.png" in err, err
    out_path = tmp_path / "o\x1b]0;title\x07.npz"
    code, out, err = run_cli(capsys, "tour", "-o", str(out_path))
    assert code == 0, err
    assert out_path.exists() and "\x1b" not in out and "o\\x1b]0;title\\x07.npz" in out


def test_shown_and_plural() -> None:
    assert _common.shown("plain → name.png") == "plain → name.png"
    assert _common.shown("a\x1b[2Jb\r\n") == "a\\x1b[2Jb\\r\\n"
    assert _common.shown("a\x1b\nb", newlines=True) == "a\\x1b\nb"
    assert _common.shown(Path("x\ty")) == "x\\ty"
    assert [plural(n, "method") for n in (0, 1, 2)] == ["0 methods", "1 method", "2 methods"]
    assert plural(1, "class", "classes") == "1 class" and plural(3, "class", "classes") == "3 classes"


def test_one_method_is_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "grid", "--methods", "gradcam", "-o", str(tmp_path / "g.png"))
    assert code == 0, err
    assert ": 1 method × layers grid" in out and "method(s)" not in out


def test_perturbed_copies_are_perturb_batch(no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "tour", "--batch-size", "4", "-o", str(tmp_path / "a.gif"))
    assert code == 2 and "--batch-size" in err  # tour explains one image: no images-per-pass option
    code, _, err = run_cli(capsys, "tour", "--perturb-batch", "4", "-o", str(tmp_path / "a.gif"))
    assert code == 2 and "--perturb-batch applies to perturbation methods only" in err, err


def test_perturb_batch_reaches_the_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from layerscope.methods import get_method

    args = argparse.Namespace(perturb_batch=7, top_k=None, guided_grads=None)
    opts = _common.method_options(args, ["scorecam"])
    assert opts == {"perturb_batch": 7} and "perturb_batch" in get_method("scorecam").options


def test_sigint_interrupts_even_when_started_ignored() -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from layerscope import cli
        try:
            with cli._sigterm_as_interrupt():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            print("ran on")
        except KeyboardInterrupt:
            print("interrupted", signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `cmd &` in a script does
    )
    assert proc.stdout.split() == ["interrupted", "True"], proc.stderr  # and the ignored SIGINT is restored


def test_batch_and_evaluate_check_mean_and_std_before_any_model_is_loaded(
    no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "imgs").mkdir()
    code, _, err = run_cli(capsys, "batch", str(tmp_path / "imgs"), "-o", str(tmp_path / "run"), "--std", "nan")
    assert code == 2 and "--std values must be finite numbers, not nan" in err, err
    code, _, err = run_cli(capsys, "evaluate", "--shapes", "2", "-o", str(tmp_path / "ev"), "--mean", "inf")
    assert code == 2 and "--mean values must be finite numbers, not inf" in err, err
