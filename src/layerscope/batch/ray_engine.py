"""The Ray Data engine: the same run, its stages spread over a Ray cluster.

``from_items`` (the pending items) → ``map_batches`` of reader tasks (decode, hash,
preprocess: any CPU of the cluster) → ``map_batches`` with an actor class that holds the
model (a pool of ``ray_actors``, each on a GPU when the cluster has them) → the driver, which
feeds the same writer pool as the local engine. The manifest, the maps and the resume are
therefore those of the local engine; what moves between machines are the preprocessed
inputs and the per-item maps, never files.

A Ray started here is shut down on every exit path; its processes are started so that they
die with this one (a SIGKILL of the run leaves no Ray agent behind), and a local Ray left by
an earlier killed run is not reused. Ray is imported only here (``pip install "layerscope[ray]"``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from layerscope.batch.engine import Explained, Job
from layerscope.batch.sources import Item, Source
from layerscope.errors import UsageError


class _Read:
    """Reader stage: items → pickled :class:`~layerscope.batch.capture.Prepared` records."""

    def __init__(self, source: Source, preprocess: Callable, shard: Any, keep: bool, side: int | None) -> None:
        self.source, self.preprocess, self.shard, self.keep, self.side = source, preprocess, shard, keep, side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from layerscope.batch.capture import prepare

        out = []
        for key, ref, kind in zip(batch["key"], batch["ref"], batch["kind"], strict=True):
            item = Item(str(key), json.loads(ref), str(kind))  # a path, a URI or an index
            p = prepare(self.source, item, self.preprocess, self.shard, self.keep, self.side)
            out.append(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL))
        return {"prepared": np.asarray(out, dtype=object)}


class _Explain:
    """Model stage: an actor holding the model (placed on the actor's accelerator by its
    capture adapter); prepared records → pickled writer payloads."""

    def __init__(self, model_bytes: bytes, params: dict[str, Any]) -> None:
        self.model = pickle.loads(model_bytes)
        self.params = params
        from layerscope.capture import adapter_for

        adapter = adapter_for(self.model)
        if adapter.accelerators():  # the actor's GPU
            adapter.move(self.model, adapter.resolve_device("auto"))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from layerscope.batch.capture import explain_safely

        prepared = [pickle.loads(b) for b in batch["prepared"]]
        payloads, seconds = explain_safely(self.model, prepared, self.params)
        others = sum(p.other_shard for p in prepared)
        decode = sum(p.seconds for p in prepared)
        record = {"payloads": payloads, "seconds": seconds, "others": others, "decode": decode, "n": len(prepared)}
        return {"result": np.asarray([pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children …), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def start_reaper(parent: int) -> int | None:
    """Fork a watchdog that keeps a list of ``parent``'s descendants and, when ``parent``
    dies (a SIGKILL included), kills them: Ray's agents, which the raylet starts and which
    would otherwise outlive a killed run. Returns its pid (``None`` where there is no
    ``/proc``); :func:`stop_reaper` ends it after a normal shutdown."""
    if not os.path.isdir("/proc"):
        return None
    pid = os.fork()
    if pid:
        return pid
    try:  # the watchdog: plain os calls only (forked from a process that may run threads)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        me, known = os.getpid(), []
        while True:
            seen = [p for p in _descendants(parent) if p != me]
            if os.getppid() != parent:  # it died during the scan: the tree may be half gone, keep the last one
                break
            known = seen
            time.sleep(0.5)
        for p in known:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
    finally:
        os._exit(0)


def stop_reaper(pid: int | None) -> None:
    """End the watchdog of :func:`start_reaper` (Ray was shut down normally)."""
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` / ``RAY_ADDRESS``, else start a fresh local Ray (never one a
    killed run left); returns whether it was started here."""
    try:
        import ray
    except ImportError:
        raise UsageError('--engine ray needs Ray Data: pip install "layerscope[ray]" (or "ray[data]")') from None
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
    if address is None:
        kwargs["num_cpus"] = max(2, min(os.cpu_count() or 2, 8))
        address = "local"
    ray.init(address=address, **kwargs)
    return True


def batches(job: Job) -> Iterator[Explained]:
    """Run the pending items through Ray Data (see the module); yields each explained batch."""
    cfg = job.config
    started = False
    reaper = None
    try:
        local = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
        reaper = start_reaper(os.getpid()) if local else None  # before Ray starts its threads
        started = _init_ray(cfg.ray_address)
        import ray
        import ray.data

        dctx = ray.data.DataContext.get_current()
        dctx.enable_progress_bars = False
        from layerscope.capture import adapter_for

        gpus = 1 if adapter_for(job.model).accelerators() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        rows = [{"key": it.key, "ref": json.dumps(it.ref), "kind": it.kind} for it in job.pending]
        readers = max(1, int(ray.cluster_resources().get("CPU", 2)) - cfg.ray_actors)
        ds = ray.data.from_items(rows)
        ds = ds.map_batches(
            _Read,
            fn_constructor_args=(
                job.source,
                job.preprocess,
                job.shard,
                job.params["keep_image"],
                job.params.get("image_side"),
            ),
            batch_size=cfg.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=readers),
        )
        ds = ds.map_batches(
            _Explain,
            fn_constructor_args=(pickle.dumps(job.model), job.params),
            batch_size=cfg.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.ray_actors),
            num_gpus=gpus,
        )
        for out in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            for blob in out["result"]:
                r = pickle.loads(blob)
                yield Explained(r["payloads"], n=r["n"], capture=r["seconds"], decode=r["decode"], others=r["others"])
    finally:
        if started:
            import ray

            ray.shutdown()
        stop_reaper(reaper)
