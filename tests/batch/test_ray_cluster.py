"""The Ray engine on a real multi-node cluster (``ray.cluster_utils.Cluster``: a head and two
worker nodes, each its own raylet, on this machine): the model actors write their own output,
to a folder or to object storage (a local S3 server, moto in server mode); a worker node
SIGKILLed mid-run loses nothing and duplicates nothing; the driver's memory does not grow
with the number of items."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_batch import moto_s3

import layerscope
from layerscope.batch import manifest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

HERE = Path(__file__).resolve().parent
SRC = Path(layerscope.__file__).resolve().parents[1]

#: The driver: one run on the cluster at ``RAY_ADDRESS``, its result and peak RSS as JSON.
DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from helpers_batch import tiny_model
from layerscope.batch import run_dataset

model, info = tiny_model()
r = run_dataset(
    out_dir=sys.argv[2], shapes=int(sys.argv[3]), model=model, info=info, target="label", engine="ray",
    ray_actors=2, save=sys.argv[4], batch_size=16, commit_every=32, progress="none",
)
with open("/proc/self/status") as f:
    hwm = int(next(line for line in f if line.startswith("VmHWM")).split()[1])
print(json.dumps({"done": r.done, "errors": r.errors, "skipped": r.skipped, "hwm_kb": hwm, "seconds": r.seconds}))
"""


def _driver(run: Path | str, n: int, address: str, save: str = "maps,npz") -> subprocess.Popen:
    env = dict(os.environ, RAY_ADDRESS=address, PYTHONPATH=os.pathsep.join([str(SRC), str(HERE)]))
    cmd = [sys.executable, "-c", DRIVER, str(HERE), str(run), str(n), save]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, dict | None, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the driver did not finish in {timeout:.0f} s (a run that hangs is a failure, not a rerun)")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), err[-3000:]


def _node(writer: str) -> str:
    """The node id in a Ray writer label ``host/node:ID/actor:ID``."""
    return writer.split("/node:", 1)[1].split("/", 1)[0]


def _committed_writers(run: Path) -> list[str]:
    """The writer of every row committed so far (the parts are whole: atomic renames)."""
    out: list[str] = []
    for part in manifest.part_files(run, "all"):
        try:
            out += manifest.read_parquet(run, part, columns=["writer"]).column("writer").to_pylist()
        except (OSError, ValueError):  # removed by a concurrent rerun: never here
            continue
    return out


BUCKET = "layerscope-ray"


@pytest.fixture(scope="module")
def s3():
    """An S3 server on localhost (moto in server mode) and the AWS variables pointing at it,
    set before the cluster starts so that its nodes' workers see them; ``None`` without
    moto or s3fs."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        yield None
        return
    with moto_s3(BUCKET):
        yield BUCKET


@pytest.fixture(scope="module")
def cluster(s3):
    """A head (no CPUs: it only runs the drivers) and two worker nodes of 3 logical CPUs
    (two model actors and a reader still fit on one node after the other is killed)."""
    c = cluster_utils.Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    try:
        for _ in range(2):
            c.add_node(num_cpus=3)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


@pytest.mark.slow  # a 3-node cluster and three driver runs: 1-3 minutes on 2 busy cores
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_worker_node_killed_mid_run(cluster, tmp_path: Path) -> None:
    n = 500
    run = tmp_path / "run"
    proc = _driver(run, n, cluster.address)
    deadline = time.monotonic() + 240
    nodes: set[str] = set()
    while proc.poll() is None and time.monotonic() < deadline:  # until both nodes have committed a part
        nodes = {_node(w) for w in _committed_writers(run)}
        if len(nodes) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before both nodes wrote: {_finish(proc)}"
    assert len(nodes) >= 2, "the two model actors did not write from two nodes"
    committed_before = len(_committed_writers(run))
    assert committed_before < n
    victim = next(w for w in cluster.worker_nodes if w.node_id[:12] in nodes)
    cluster.remove_node(victim, allow_graceful=False)  # SIGKILL: its raylet, object store and actors
    rc, first, err = _finish(proc)
    reran = rc != 0
    if reran:  # Ray gave up on the lost node: the same command again, on what is left (and a new node)
        cluster.add_node(num_cpus=3)
        cluster.wait_for_nodes()
        rc, second, err = _finish(_driver(run, n, cluster.address))
        assert rc == 0, err
        assert second is not None and second["skipped"] >= committed_before and second["errors"] == 0
    else:
        assert first is not None and first["done"] == n and first["errors"] == 0, err

    table = pq.read_table(run / "manifest.parquet")
    keys = table.column("key").to_pylist()
    assert sorted(keys) == [f"shapes-1/{i:06d}" for i in range(n)]  # every item exactly once
    assert set(table.column("status").to_pylist()) == {"ok"}
    writers = table.column("writer").to_pylist()
    assert len({_node(w) for w in writers}) >= 2 and victim.node_id[:12] in {_node(w) for w in writers}

    # every listed file is whole and readable; the maps store and the .npz files agree
    reader = layerscope.open_run(run)
    layers = list(reader.layers)
    listed = set()
    for row in table.to_pylist():
        listed.add(row["maps_shard"])
        maps = reader.maps(row["key"])
        with np.load(run / row["outputs"][0]) as z:
            for name in layers:
                np.testing.assert_array_equal(maps[name], z[f"cam/{name}"][0])
    on_disk = {f"maps/all/{p.name}" for p in (run / "maps" / "all").iterdir()}
    assert on_disk == listed  # no orphan shard from the killed node is left after the merge/rerun
    assert not list(run.rglob(".*.part*"))  # a killed writer's temporary files are gone too
    print(
        f"killed node {victim.node_id[:12]} after {committed_before} committed rows; "
        f"{'rerun' if reran else 'Ray retried'}; rows per node: "
        + ", ".join(f"{k}: {sum(_node(w) == k for w in writers)}" for k in sorted({_node(w) for w in writers}))
    )


@pytest.mark.slow  # two driver runs on the cluster
def test_driver_memory_does_not_grow_with_items(cluster, tmp_path: Path) -> None:
    """The driver's peak RSS for 200 and 800 items (the 500 / 2,000 comparison with the demo
    model is ``benchmarks/ray_cluster.py``; its numbers are in docs/datasets.md).

    Maps never reach the driver; what it holds per item is its key in the plan and, at the
    merge, its manifest row: well under 1 MB for 600 more items. The bound, 10 MB (17 kB an
    item), is what a driver that kept each item's payload would exceed: the tiny model's two
    maps (32² and 16², float32: 5 kB) and its preprocessed input (32²×3, float32: 12 kB).
    """
    peaks = {}
    for n in (200, 800):
        rc, res, err = _finish(_driver(tmp_path / f"run{n}", n, cluster.address))
        assert rc == 0 and res is not None and res["done"] == n, err
        peaks[n] = res["hwm_kb"] / 1024
    print(f"driver peak RSS: {peaks[200]:.1f} MB for 200 items, {peaks[800]:.1f} MB for 800")
    assert peaks[800] - peaks[200] < 10.0


@pytest.mark.slow  # one driver run on the cluster
def test_actors_write_to_object_storage(cluster, s3) -> None:
    """RUN_DIR on S3: the actors upload each finished file and manifest part in one put."""
    if s3 is None:
        pytest.skip("needs moto and s3fs")
    from layerscope.batch import fs

    n, uri = 48, f"s3://{s3}/ray-run"
    rc, res, err = _finish(_driver(uri, n, cluster.address, save="npz"))
    assert rc == 0 and res is not None and res["done"] == n and res["errors"] == 0, err
    rd = fs.run_dir(uri)
    table = manifest.read_parquet(rd, manifest.MANIFEST)
    assert sorted(table.column("key").to_pylist()) == [f"shapes-1/{i:06d}" for i in range(n)]
    assert all("/node:" in w and "/actor:" in w for w in table.column("writer").to_pylist())
    layers = manifest.read_run_file(rd)["layers"]
    for row in table.to_pylist():
        with np.load(io.BytesIO(rd.read_bytes(row["outputs"][0]))) as z:  # a whole object, readable
            for name in layers:
                cam = z[f"cam/{name}"][0]
                assert np.isfinite(cam).all() and cam.ndim == 2
                assert float(cam.max()) == pytest.approx(row[f"{name}/peak"], rel=1e-5, abs=1e-7)
