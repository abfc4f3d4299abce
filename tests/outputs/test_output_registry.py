"""The output registry: a new format is one writer and one register() call, and every
consumer (the CLI's tour, Explanation.save) takes it without any other change."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_outputs import make_exp

from conftest import run_cli
from layerscope import outputs
from layerscope.errors import UsageError
from layerscope.outputs import Writer


def _write_toy(exp, path, options, index, overwrite):  # type: ignore[no-untyped-def]
    path.write_text("\n".join(exp.layers) + "\n")
    return path


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Writer:
    monkeypatch.setattr(outputs._registry, "WRITERS", dict(outputs.WRITERS))  # restored after the test
    monkeypatch.setattr(outputs, "WRITERS", outputs._registry.WRITERS)
    return outputs.register(".toy", Writer("toy text (the layer names)", _write_toy, draws_frames=False))


def test_a_registered_writer_is_used_by_save_and_by_tour(
    toy: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ".toy" in outputs.extensions() and outputs.writer_for("x.TOY") is toy
    exp = make_exp(1)
    saved = exp.save(tmp_path / "x.toy")
    assert Path(saved[0] if isinstance(saved, list) else saved).read_text() == "conv_a\nconv_b\nconv_c\n"

    code, out, err = run_cli(capsys, "tour", "-o", str(tmp_path / "t.toy"))
    assert code == 0, err
    names = (tmp_path / "t.toy").read_text().split()
    assert len(names) == 13 and "13 layers" in out  # the demo model's 13 layers, in order
    assert names[0] != names[-1]


def test_register_refuses_bad_extensions_and_silent_replacement(toy: Writer) -> None:
    with pytest.raises(UsageError, match="a dot and a name"):
        outputs.register("toy", toy)
    with pytest.raises(UsageError, match="already has a writer"):
        outputs.register(".gif", toy)
    with pytest.raises(UsageError, match=r"takes a layerscope\.outputs\.Writer"):
        outputs.register(".txt", _write_toy)  # type: ignore[arg-type]
    assert outputs.register(".gif", toy, replace=True) is toy


def test_an_unknown_extension_lists_the_registry() -> None:
    with pytest.raises(UsageError, match=r"use one of \.gif, \.png, \.webp, \.npz, \.html, \.mp4"):
        outputs.writer_for("a.bmp")


def test_tour_help_lists_every_registered_format(capsys: pytest.CaptureFixture[str]) -> None:
    from layerscope import cli

    assert cli.main(["tour", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for ext, w in outputs.WRITERS.items():
        assert f"{ext}: {w.name}" in text
