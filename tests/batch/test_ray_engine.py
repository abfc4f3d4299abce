"""The Ray Data engine gives the local engine's manifest and maps (local Ray, 2 CPUs); what a
killed run started does not outlive it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_batch import tiny_model

from layerscope.batch import run_dataset
from layerscope.batch.ray_engine import _Explain, _explained, plan
from layerscope.batch.sources import Item
from layerscope.errors import OutputError

ray = pytest.importorskip("ray")


@pytest.mark.slow  # starting Ray and its workers takes 30-70 s on 2 cores
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own settings
def test_ray_engine_matches_local(tmp_path: Path) -> None:
    model, info = tiny_model()
    common = {"shapes": 100, "model": model, "info": info, "target": "label", "progress": "none", "batch_size": 16}
    local = run_dataset(out_dir=tmp_path / "local", workers=1, **common)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_dataset(out_dir=tmp_path / "ray", engine="ray", **common)
    finally:
        ray.shutdown()
    assert local.done == remote.done == 100 and remote.errors == 0
    a = pq.read_table(tmp_path / "local" / "manifest.parquet").to_pylist()
    b = pq.read_table(tmp_path / "ray" / "manifest.parquet").to_pylist()
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        host = socket.gethostname()
        assert re.fullmatch(rf"{re.escape(host)}/pid:\d+", ra.pop("writer"))  # a forked writer of this run
        assert re.fullmatch(rf"{re.escape(host)}/node:[0-9a-f]{{12}}/actor:[0-9a-f]{{12}}", rb.pop("writer"))
        for k, v in ra.items():
            if isinstance(v, float):
                assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
            else:
                assert rb[k] == v, k
        with np.load(tmp_path / "local" / ra["outputs"][0]) as za, np.load(tmp_path / "ray" / rb["outputs"][0]) as zb:
            for name in ("cam/0", "cam/2"):
                np.testing.assert_allclose(za[name], zb[name], rtol=1e-4, atol=1e-6)
    with np.load(tmp_path / "local/summary/mean_maps.npz") as za, np.load(tmp_path / "ray/summary/mean_maps.npz") as zb:
        assert za.files == zb.files
        np.testing.assert_allclose(za["correct/2"], zb["correct/2"], rtol=1e-4, atol=1e-6)


REAPED = """
import os, subprocess, sys, time
from layerscope.batch.ray_engine import start_reaper
start_reaper(os.getpid())
agent = subprocess.Popen(["sleep", "60"], start_new_session=True)  # like Ray's agents: its own session
time.sleep(1.0)  # the watchdog has seen it
print(agent.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_and_wait(run: subprocess.Popen, pid: int) -> None:
    """SIGKILL the run; ``pid`` must be gone within 15 s."""
    import os
    import signal
    import time

    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_processes_below_a_killed_run_are_reaped() -> None:
    """Issue 18 item 11: SIGKILL the run; what it started (Ray's agents) does not outlive it."""
    import subprocess
    import sys
    import time

    run = subprocess.Popen([sys.executable, "-c", REAPED], stdout=subprocess.PIPE, text=True)
    agent = int(run.stdout.readline())
    assert _alive(agent)
    time.sleep(2.0)  # the watchdog scans every 0.5 s: let it see the agent even on a loaded machine
    _kill_and_wait(run, agent)


ORPHANED = """
import os, sys, time
from layerscope.batch.ray_engine import start_reaper
start_reaper(os.getpid())
if os.fork() == 0:  # a daemon, as Ray's processes may be: fork twice, the middle one exits
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        os.execvp("sleep", ["sleep", "60"])  # a program of its own, as Ray's raylet and workers
    os._exit(0)
time.sleep(60)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_process_that_left_the_run_s_tree_is_reaped_too() -> None:
    """A process re-parented away from the run (a double fork) is no descendant of it any
    more; it still carries the run's token in its environment, and the watchdog kills it."""
    import subprocess
    import sys
    import time

    from layerscope.batch.ray_engine import _descendants

    run = subprocess.Popen([sys.executable, "-c", ORPHANED], stdout=subprocess.PIPE, text=True)
    daemon = int(run.stdout.readline())
    deadline = time.monotonic() + 10
    while daemon in _descendants(run.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(daemon) and daemon not in _descendants(run.pid)  # out of the tree
    time.sleep(1.0)
    _kill_and_wait(run, daemon)


def test_plan_fixes_every_part_number_before_the_run() -> None:
    """Units of ``unit_size`` items, unit k committing part ``base + k`` and, after a change of
    map shape, ``base + k + units`` …: no two units can ever write the same part name."""
    items = [Item(f"a/{i}.png", f"/data/a/{i}.png") for i in range(7)] + [Item("s/0", 3, "shapes")]
    units = plan(items, 3, base=5)
    assert [(u["part"], u["step"]) for u in units] == [(5, 3), (6, 3), (7, 3)]
    back = [Item(k, ref, kind) for u in units for k, ref, kind in json.loads(u["items"])]
    assert back == items  # every item once, in order, its ref and kind intact
    names = [{u["part"] + j * u["step"] for j in range(50)} for u in units]
    assert all(a.isdisjoint(b) for i, a in enumerate(names) for b in names[i + 1 :])
    assert plan([], 3, base=1) == []


def test_a_full_disk_in_an_actor_ends_the_run_with_its_error(tmp_path: Path, monkeypatch) -> None:
    """The model actor's unit, run here (no Ray): a commit that fails as on a full disk
    leaves nothing under a final name, and its record ends the run with the writer's error
    (Ray would carry the exception back only as text)."""
    import errno

    from layerscope.batch import manifest, maps_store
    from layerscope.batch.capture import prepare
    from layerscope.batch.sink import RunContext
    from layerscope.batch.sources import ShapesSource

    model, info = tiny_model()
    src = ShapesSource(5)
    prepared = [prepare(src, it, info.preprocessor()) for it in src.items()]
    ctx = RunContext(tmp_path, ["0", "2"], "gradcam", None, ("npz",), "all", maps_dtype="float32")
    actor = _Explain.__new__(_Explain)  # its __init__ asks Ray for the node and actor ids
    actor.model, actor.ctx, actor.batch_size, actor.writer = model, ctx, 2, "host/node:n/actor:a"
    actor.params = {
        "layers": ["0", "2"], "method": "gradcam", "target": None, "info": info, "method_options": {},
        "explain_options": {}, "keep_image": False, "image_side": None,
    }  # fmt: skip
    ok = actor._unit(7, 3, prepared)
    assert (ok["n"], ok["ok"], ok["errors"]) == (5, 5, 0) and _explained(ok).written == (5, 0)
    part = pq.read_table(tmp_path / "manifest/all/part-000007.parquet")  # the planned part number
    assert part.column("writer").to_pylist() == ["host/node:n/actor:a"] * 5
    assert part.column("maps_shard").to_pylist() == ["maps/all/part-000007.arrow"] * 5

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest, "write_part", full)
    failed = actor._unit(8, 3, prepared)
    assert failed["failed"] == "OSError: [Errno 28] No space left on device"
    assert not (tmp_path / "manifest/all/part-000008.parquet").exists()
    assert (tmp_path / "maps/all/part-000008.arrow").is_file()  # whole, but its part never came: an orphan
    assert maps_store.remove_orphans(tmp_path, "all") == 1  # what a resume (or the run's end) removes
    assert sorted(p.name for p in (tmp_path / "maps/all").iterdir()) == ["part-000007.arrow"]
    with pytest.raises(OutputError, match=r"the writer failed: OSError: \[Errno 28\] No space left on device"):
        _explained(failed)
