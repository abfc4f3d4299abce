"""The writer pool: batches handed out in turn, parts numbered so writers never clash,
counts added up; after a writer fails (a full disk) the run exits within seconds instead of
waiting for ever on a queue nobody reads (issue 18 item 9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from layerscope.batch.sink import RunContext
from layerscope.batch.writer import WriterPool

FULL_DISK = textwrap.dedent(
    """
    import errno, sys
    sys.path.insert(0, sys.argv[2])
    from helpers_batch import FAST, tiny_model
    from layerscope.batch import manifest, run_dataset
    from layerscope.batch.sources import ShapesSource

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    manifest.write_part = full  # every commit fails, as on a full disk (the forked writer sees it)
    model, info = tiny_model()
    try:
        run_dataset(ShapesSource(400, size=96), sys.argv[1], model, info=info, commit_every=8, **FAST)
    except Exception as e:
        print("raised:", e, flush=True)
        sys.exit(1)
    """
)


def test_a_full_disk_exits_nonzero_within_seconds(tmp_path: Path) -> None:
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,  # the unfixed pool hung here for ever after printing the error
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert "the writer failed: OSError: [Errno 28] No space left on device" in out.stdout
    assert time.monotonic() - t0 < 30


def _payload(i: int, error: str | None = None) -> dict:
    return {"key": f"k{i:02d}", "source": f"k{i:02d}", "content_hash": f"{i:064x}", "label": None, "error": error}


def test_pool_hands_batches_out_in_turn_and_counts(tmp_path: Path) -> None:
    ctx = RunContext(run_dir=tmp_path, layers=["a"], method="gradcam", class_names=None, save=(), tag="all")
    pool = WriterPool(ctx, count=2)
    for b in range(5):  # 5 batches of 3 error payloads: writer 0 gets batches 0, 2, 4; writer 1 gets 1, 3
        pool.put(("items", [_payload(3 * b + j, error="bad") for j in range(3)]))
    pids = [w.pid for w in pool.workers]
    pool.stop(timeout=30)
    assert (pool.ok, pool.errors) == (0, 15)
    assert pool.counts == {0: (0, 9), 1: (0, 6)}  # (ok, errors) per writer
    parts = sorted(p.name for p in (tmp_path / "manifest" / "all").glob("part-*.parquet"))
    assert parts == ["part-000001.parquet", "part-000002.parquet"]  # base 1, step 2: writer k → 1 + k
    rows = [r for p in parts for r in pq.read_table(tmp_path / "manifest" / "all" / p).to_pylist()]
    assert sorted(r["key"] for r in rows) == [f"k{i:02d}" for i in range(15)]
    assert all(r["status"] == "error: bad" for r in rows)
    for k, part in enumerate(parts):  # each row names the forked writer process that wrote it
        writers = set(pq.read_table(tmp_path / "manifest" / "all" / part).column("writer").to_pylist())
        assert writers == {f"{socket.gethostname()}/pid:{pids[k]}"} and pids[k] != os.getpid()


def test_pool_kill_never_waits(tmp_path: Path) -> None:
    ctx = RunContext(run_dir=tmp_path, layers=["a"], method="gradcam", class_names=None, save=(), tag="all")
    pool = WriterPool(ctx, count=1)
    pool.workers[0].terminate()
    pool.workers[0].join()
    t0 = time.monotonic()
    with pytest.raises(Exception, match="writer"):
        for i in range(50):
            pool.put(("items", [_payload(i, error="x") for _ in range(200)]))
    pool.abort()
    assert time.monotonic() - t0 < 10
