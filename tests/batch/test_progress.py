"""What a run says: plural only when the count is not 1 ("1 error", "2 errors"), non-image
files of a folder counted, unreadable subfolders reported (issue 18 item 18)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers_batch import FAST, tiny_model
from PIL import Image

from layerscope.batch import RunResult, run_dataset
from layerscope.batch.progress import Progress, plural
from layerscope.datasets.shapes import make_sample


def test_plural() -> None:
    assert [plural(n, "error") for n in (0, 1, 2)] == ["0 errors", "1 error", "2 errors"]


def test_summary_literal() -> None:
    r = RunResult(run_dir=Path("out"), done=3, errors=1, skipped=2, other_files=1, seconds=2.0)
    assert r.summary() == (
        "3 done (1 error), 2 skipped as already done, 1 non-image file not read, in 2.0 s (1.5 items/s) → out"
    )
    r = RunResult(run_dir=Path("out"), done=4, errors=2, other_shards=5, other_files=2, unreadable=["a/b"], seconds=1)
    assert r.summary() == (
        "4 done (2 errors), 0 skipped as already done, 5 in other shards, 2 non-image files not read, "
        "1 unreadable folder (a/b), in 1.0 s (4.0 items/s) → out"
    )


def test_progress_log_line_literal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="layerscope.batch")
    bar = Progress(1, "log", every=1)
    bar.update(1, 1)
    assert caplog.records[-1].getMessage().startswith("1/1 item (") and ", 1 error, " in caplog.records[-1].getMessage()


def test_a_folder_run_counts_what_it_did_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from layerscope import inputs

    src = tmp_path / "imgs"
    (src / "locked").mkdir(parents=True)
    Image.fromarray(make_sample(1, 0, 32)[0]).save(src / "a.png")
    Image.fromarray(make_sample(1, 1, 32)[0]).save(src / "locked" / "b.png")
    (src / "notes.txt").write_text("x")
    real = os.scandir

    def scandir(path):  # a chmod 000 folder, for a user who is not root
        if isinstance(path, (str, os.PathLike)) and Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    model, info = tiny_model()
    r = run_dataset(src, tmp_path / "run", model, info=info, **FAST)
    assert (r.done, r.other_files, r.unreadable) == (1, 1, [str(src / "locked")])
    assert "1 non-image file not read, 1 unreadable folder" in r.summary()
