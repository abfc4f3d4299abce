"""The run folder's lock and resume: a busy run folder is refused whatever the flags
(issue 18 item 3); a rerun retries error rows, no stale error stays (item 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_batch import FAST, tiny_model
from PIL import Image

from layerscope.batch import manifest, run_dataset
from layerscope.datasets.shapes import make_sample
from layerscope.errors import UsageError

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from layerscope.batch.manifest import RunLock, shard_lock
    with RunLock(Path(sys.argv[1])), shard_lock(Path(sys.argv[1]), "all"):  # what a running batch holds
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_a_busy_run_folder_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    model, info = tiny_model()
    out = tmp_path / "run"
    run_dataset(shapes=4, out_dir=out, model=model, info=info, **FAST)
    parts = sorted(p.name for p in (out / "manifest" / "all").glob("part-*.parquet"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for kw in ({}, {"overwrite": True}, {"method": "gradcam++", "overwrite": True}):
            with pytest.raises(UsageError, match="another layerscope batch is running in this folder"):
                run_dataset(shapes=4, out_dir=out, model=model, info=info, **kw, **FAST)
        # nothing of the first run was removed
        assert sorted(p.name for p in (out / "manifest" / "all").glob("part-*.parquet")) == parts
        assert (out / manifest.RUN_FILE).is_file() and (out / manifest.MANIFEST).is_file()
    finally:
        holder.kill()
        holder.wait()
    r = run_dataset(shapes=4, out_dir=out, model=model, info=info, method="gradcam++", overwrite=True, **FAST)
    assert (r.done, r.skipped) == (4, 0)


def test_lock_is_shared_by_shards_and_exclusive_to_clear(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with manifest.RunLock(tmp_path / "r") as lock:  # another shard of the same run: side by side
            with pytest.raises(UsageError, match="another layerscope batch"):
                lock.exclusive()  # but not alone, so nothing may be cleared
    finally:
        holder.kill()
        holder.wait()
    with manifest.RunLock(tmp_path / "r") as lock:
        lock.exclusive()
    assert (tmp_path / "r" / manifest.LOCK_FILE).is_file()


def _write(p: Path, i: int) -> bytes:
    rgb, _, _ = make_sample(2, i, 40)
    Image.fromarray(rgb).save(p)
    return p.read_bytes()


def test_a_fixed_file_is_retried_and_its_error_row_replaced(tmp_path: Path) -> None:
    model, info = tiny_model()
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        _write(src / f"img{i}.png", i)
    good = (src / "img1.png").read_bytes()
    (src / "img1.png").write_bytes(good[: len(good) // 2])  # truncated
    out = tmp_path / "run"
    first = run_dataset(src, out, model, info=info, **FAST)
    assert (first.done, first.errors) == (3, 1)
    status = {r["key"]: r["status"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert status["img1.png"].startswith("error: ") and status["img0.png"] == "ok"

    (src / "img1.png").write_bytes(good)  # fixed: its content hash changes
    again = run_dataset(src, out, model, info=info, **FAST)
    assert (again.done, again.errors, again.skipped) == (1, 0, 2)
    table = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["key"] for r in table] == ["img0.png", "img1.png", "img2.png"]  # once each: no stale row
    assert all(r["status"] == "ok" for r in table)
    import hashlib

    assert next(r for r in table if r["key"] == "img1.png")["content_hash"] == hashlib.sha256(good).hexdigest()
    with np.load(out / "summary" / "mean_maps.npz") as z:
        assert "layers" in z.files


def test_retry_errors_off_keeps_error_rows(tmp_path: Path) -> None:
    model, info = tiny_model()
    src = tmp_path / "imgs"
    src.mkdir()
    _write(src / "a.png", 0)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "run"
    run_dataset(src, out, model, info=info, **FAST)
    again = run_dataset(src, out, model, info=info, retry_errors=False, **FAST)
    assert (again.done, again.skipped) == (0, 2)
    retried = run_dataset(src, out, model, info=info, **FAST)
    assert (retried.done, retried.errors, retried.skipped) == (1, 1, 1)
    assert len(pq.read_table(out / "manifest.parquet")) == 2


def test_recheck_redoes_an_item_whose_content_changed(tmp_path: Path) -> None:
    import hashlib

    model, info = tiny_model()
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        _write(src / f"img{i}.png", i)
    out = tmp_path / "run"
    run_dataset(src, out, model, info=info, commit_every=1, **FAST)  # one item per part
    new = _write(src / "img0.png", 7)  # another picture under the same name
    assert run_dataset(src, out, model, info=info, commit_every=1, **FAST).skipped == 3  # not rechecked
    again = run_dataset(src, out, model, info=info, commit_every=1, recheck=True, **FAST)
    assert (again.done, again.skipped) == (1, 2)
    table = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["key"] for r in table] == ["img0.png", "img1.png", "img2.png"]
    assert table[0]["content_hash"] == hashlib.sha256(new).hexdigest()
    whole = run_dataset(src, tmp_path / "run8", model, info=info, **FAST)  # one part holds all three
    _write(src / "img1.png", 8)
    again = run_dataset(src, tmp_path / "run8", model, info=info, recheck=True, **FAST)
    assert (whole.done, again.done, again.skipped) == (3, 3, 0)  # the changed item's part is redone whole
