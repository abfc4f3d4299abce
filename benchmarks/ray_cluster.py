"""The Ray engine on a multi-node cluster on this machine: the driver's peak memory against the
number of items, which node wrote what, and a worker node SIGKILLed mid-run.

A ``ray.cluster_utils.Cluster``: a head with no CPUs (it only runs the drivers) and
``--nodes`` worker nodes of ``--cpus`` logical CPUs, each its own raylet and object store.
Each run is a separate driver process (``run_dataset(engine="ray")`` on the built-in demo
model, ``--n`` shapes images at 96², ``--save`` maps by default, two model actors); it prints
its peak RSS (``VmHWM``) when it ends, after the merge. Then one more run of the largest
``--n`` in which a worker node is removed with SIGKILL (``Cluster.remove_node(...,
allow_graceful=False)``: its raylet, object store and actors) as soon as both nodes have
committed a manifest part; the run completes through Ray's retries (or, if Ray gives up, by
the same command run again). Every run is checked: each item exactly once in the manifest,
every maps row readable. Run::

    python benchmarks/ray_cluster.py --n 500,2000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DRIVER = r"""
import json, sys
from layerscope.batch import run_dataset

r = run_dataset(
    out_dir=sys.argv[1], shapes=int(sys.argv[2]), engine="ray", ray_actors=2, save=sys.argv[3],
    batch_size=32, progress="none", target="label",
)
with open("/proc/self/status") as f:
    hwm = int(next(line for line in f if line.startswith("VmHWM")).split()[1])
print(json.dumps({"done": r.done, "errors": r.errors, "skipped": r.skipped, "hwm_kb": hwm,
                  "seconds": r.seconds, "timings": r.timings}))
"""


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def driver(run: Path, n: int, save: str, address: str) -> subprocess.Popen:
    env = dict(os.environ, RAY_ADDRESS=address)
    cmd = [sys.executable, "-c", DRIVER, str(run), str(n), save]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"failed": f"hung: not finished after {timeout:.0f} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"failed": err[-2000:]}
    return json.loads(lines[-1])


def node_of(writer: str) -> str:
    return writer.split("/node:", 1)[1].split("/", 1)[0]


def committed_nodes(run: Path) -> set[str]:
    from layerscope.batch import manifest

    nodes = set()
    for part in manifest.part_files(run, "all"):
        nodes |= {node_of(w) for w in manifest.read_parquet(run, part, columns=["writer"]).column("writer").to_pylist()}
    return nodes


def check(run: Path, n: int) -> dict[str, int]:
    """Every item exactly once, every maps row readable; rows per writing node."""
    import pyarrow.parquet as pq

    import layerscope

    table = pq.read_table(run / "manifest.parquet")
    keys = table.column("key").to_pylist()
    assert sorted(keys) == [f"shapes-1/{i:06d}" for i in range(n)], "items missing or repeated"
    reader = layerscope.open_run(run)
    if reader.record.get("fingerprint", {}).get("maps_dtype"):
        for key in keys:
            reader.maps(key)
    assert not list(run.rglob(".*.part*")), "temporary files left"
    return dict(collections.Counter(node_of(w) for w in table.column("writer").to_pylist()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="500,2000", help="items per run, comma-separated")
    ap.add_argument("--save", default="maps")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=3, help="logical CPUs per worker node")
    args = ap.parse_args()
    sizes = [int(s) for s in args.n.split(",")]

    from ray.cluster_utils import Cluster

    print(f"load average at start: {load()}")
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=args.cpus)
        cluster.wait_for_nodes()
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                run = Path(tmp) / f"run{n}"
                t0 = time.perf_counter()
                r = finish(driver(run, n, args.save, cluster.address))
                if "failed" in r:
                    raise SystemExit(f"the {n}-item run failed:\n{r['failed']}")
                per_node = check(run, n)
                print(
                    f"{n:>6} items: {time.perf_counter() - t0:6.1f} s, driver peak RSS {r['hwm_kb'] / 1024:7.1f} MB, "
                    f"rows per node {per_node}"
                )
            n = max(sizes)
            run = Path(tmp) / "killed"
            t0 = time.perf_counter()
            proc = driver(run, n, args.save, cluster.address)
            nodes: set[str] = set()
            while proc.poll() is None and len(nodes) < 2:
                time.sleep(0.2)
                nodes = committed_nodes(run)
            victim = next(w for w in cluster.worker_nodes if w.node_id[:12] in nodes)
            rows_at_kill = sum(check_rows(run))
            cluster.remove_node(victim, allow_graceful=False)
            t_kill = time.perf_counter() - t0
            r = finish(proc)
            how = "Ray's retries"
            if str(r.get("failed", "")).startswith("hung"):
                raise SystemExit(f"the run with a killed node {r['failed']}")
            if "failed" in r:
                how = "a rerun"
                cluster.add_node(num_cpus=args.cpus)
                cluster.wait_for_nodes()
                r = finish(driver(run, n, args.save, cluster.address))
                if "failed" in r:
                    raise SystemExit(f"the rerun failed:\n{r['failed']}")
            per_node = check(run, n)
            print(
                f"{n:>6} items, node {victim.node_id[:12]} SIGKILLed at {t_kill:.1f} s ({rows_at_kill} rows "
                f"committed): completed by {how} in {time.perf_counter() - t0:.1f} s, driver peak RSS "
                f"{r['hwm_kb'] / 1024:.1f} MB, rows per node {per_node}"
            )
    finally:
        cluster.shutdown()
    print(f"load average at end: {load()}")


def check_rows(run: Path) -> list[int]:
    from layerscope.batch import manifest

    return [manifest.read_parquet(run, p, columns=["key"]).num_rows for p in manifest.part_files(run, "all")]


if __name__ == "__main__":
    main()
