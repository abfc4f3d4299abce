"""A dataset run killed (SIGKILL) or interrupted (SIGINT) at a random point, then rerun:
every item exactly once, every listed file whole, no temporary file left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, HELPERS)
    from helpers_batch import tiny_model
    from layerscope.batch import run_dataset
    from layerscope.batch.sources import ShapesSource

    torch.set_num_threads(1)
    model, info = tiny_model()
    n, out, save = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    try:
        r = run_dataset(ShapesSource(n, size=32), out_dir=out, model=model, info=info, save=save, batch_size=16,
                        workers=1, commit_every=32, progress="none")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    print(r.done, r.skipped, r.errors)
    """
)

N = 520


def _start(tmp_path: Path, out: Path, save: str = "npz") -> subprocess.Popen:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.replace("HELPERS", repr(str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(N), str(out), save],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a suite started in the background (`pytest &`) ignores SIGINT, and children inherit it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_parts(out: Path, proc: subprocess.Popen, count: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((out / "manifest" / "all").glob("part-*.parquet"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it was stopped: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run committed nothing in time")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _check_consistent(out: Path) -> list[str]:
    """Every committed key once, every listed file readable, no temporary file: the keys."""
    keys: list[str] = []
    for part in sorted((out / "manifest").rglob("part-*.parquet")):
        table = pq.read_table(part).to_pylist()
        for row in table:
            keys.append(row["key"])
            assert row["status"] == "ok", row["status"]
            for f in row["outputs"]:
                with np.load(out / f) as z:
                    assert z["cam/2"].shape == (1, 16, 16)
    assert len(keys) == len(set(keys))
    leftovers = [p for p in out.rglob("*") if ".part" in p.name]
    assert not leftovers, leftovers
    return keys


@pytest.mark.slow  # about 20 s: a 520-item run, killed, then finished
def test_sigkill_then_rerun_every_item_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, out)
    _wait_for_parts(out, proc, count=random.randint(1, 4))
    time.sleep(random.uniform(0.0, 0.5))
    helpers = _children(proc.pid)
    assert len(helpers) >= 2  # a reader and the writer
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in helpers if _alive(pid)], "a helper of the killed run lives on"
    # after the kill: whole parts only (temporary files of the killed writer may remain until the rerun)
    committed = set()
    for part in (out / "manifest" / "all").glob("part-*.parquet"):
        committed.update(pq.read_table(part, columns=["key"]).column("key").to_pylist())
    assert 0 < len(committed) < N
    rerun = _start(tmp_path, out)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    done, skipped, errors = map(int, stdout.split())
    assert skipped == len(committed) and done == N - len(committed) and errors == 0
    keys = _check_consistent(out)
    assert sorted(keys) == [f"shapes-1/{i:06d}" for i in range(N)]
    merged = pq.read_table(out / "manifest.parquet", columns=["key"]).column("key").to_pylist()
    assert merged == sorted(keys)


def test_sigint_exits_130_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, out)
    _wait_for_parts(out, proc, count=1)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
    keys = _check_consistent(out)
    assert 0 < len(keys) < N
    # the writer committed what it held, so the parts end with no gap: a rerun only adds
    assert not (out / "manifest.parquet").exists()
