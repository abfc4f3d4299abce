"""``layerscope evaluate``'s files: written as one set (all or none) before the table is printed,
so a closed stdout or a full disk never leaves some of them; ``-o DIR/`` writes inside the
folder; a huge ``--shapes`` is refused before any work; singular wording."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import run_cli  # noqa: E402

#: The cheapest evaluation: one image, one layer, the pointing game only.
CHEAP = ("--methods", "gradcam", "--layers", "block5_conv3", "--metrics", "pointing", "--no-random-baseline",
         "--no-progress")  # fmt: skip


def _written(folder, prefix: str = "ev") -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def test_a_closed_stdout_loses_no_file(tmp_path) -> None:
    # Issue 18 item 4: `layerscope evaluate … | true` printed the table first and the broken
    # pipe ended the command before any file was written.
    out = tmp_path / "ev"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([p for p in sys.path if p])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerscope", "evaluate", "--shapes", "1", *CHEAP, "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    proc.stdout.close()  # the reader left before anything was printed
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (0, 141), stderr.decode()
    assert b"Traceback" not in stderr and b"internal error" not in stderr
    for ext in (".csv", ".png", ".svg", ".html"):
        assert (tmp_path / f"ev{ext}").stat().st_size > 50


def test_output_folder_writes_inside_it(capsys, tmp_path) -> None:
    # Issue 18 item 18: `evaluate -o s/` wrote s.csv beside the folder.
    code, stdout, stderr = run_cli(capsys, "evaluate", "--shapes", "1", *CHEAP, "-o", f"{tmp_path / 's'}/")
    assert code == 0, stderr
    assert not (tmp_path / "s.csv").exists()
    assert {"evaluation.csv", "evaluation.png", "evaluation.svg", "evaluation.html"} <= set(os.listdir(tmp_path / "s"))
    # An existing folder, named without the slash, likewise.
    (tmp_path / "t").mkdir()
    # (--perturb-batch is the metrics' too: no "applies to perturbation methods only" for gradcam.)
    code, _, stderr = run_cli(
        capsys,
        "evaluate",
        "--shapes",
        "3",
        *CHEAP,
        "--perturb-batch",
        "7",
        "--batch-size",
        "2",
        "-o",
        str(tmp_path / "t"),
    )
    assert code == 0, stderr
    assert (tmp_path / "t" / "evaluation.csv").is_file() and not (tmp_path / "t.csv").exists()
    assert ",3\n" in (tmp_path / "t" / "evaluation.csv").read_text()  # 3 images, in batches of 2 (n = 3)
    # One image, one layer, one method: said so, not "1 images", "1 layers", "1 method(s)".
    assert stdout.startswith("1 fresh shapes image, 1 layer, 1 method\n")
    assert "(1 image)" in stdout and "image(s)" not in stdout and "method(s)" not in stdout + stderr


def test_a_failing_write_leaves_none_of_the_files(capsys, tmp_path, monkeypatch) -> None:
    # Issue 18 item 18: on a full disk `evaluate` left 3 of its 5 files. The plots are the
    # third and fourth files (after .csv and, with pyarrow, .parquet): the second one fails.
    from matplotlib.figure import Figure

    real, calls = Figure.savefig, []

    def savefig(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    code, _, stderr = run_cli(capsys, "evaluate", "--shapes", "1", *CHEAP, "-o", str(tmp_path / "ev"))
    assert code != 0 and "no space left" in stderr.lower()
    assert len(calls) == 2
    assert os.listdir(tmp_path) == []  # no file of the set, and no temporary left


def test_huge_shapes_refused_before_any_work(capsys, tmp_path) -> None:
    # Issue 18 item 10: `--shapes 100000000` allocated 2.5 TiB up front.
    t0 = time.perf_counter()
    code, _, stderr = run_cli(capsys, "evaluate", "--shapes", "100000000", "-o", str(tmp_path / "ev"))
    assert code == 2 and "--max-images 100,000" in stderr and "pass --max-images N" in stderr
    assert time.perf_counter() - t0 < 5
    assert os.listdir(tmp_path) == []
