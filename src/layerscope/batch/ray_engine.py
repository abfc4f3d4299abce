"""The Ray Data engine: the same run, its stages spread over a Ray cluster, each worker
writing its own output.

The driver only plans: it cuts the pending items into *units* of at most ``commit_every``
items (:func:`plan`), each with its manifest part number fixed in advance (``base + k``,
then ``+ units`` for a unit's next part), so no two writers ever pick the same name whatever
actor or node runs a unit, and a unit that Ray runs again (its actor died with its node)
writes the same names again. ``from_items`` (the units) → ``map_batches`` of reader tasks
(decode, hash, preprocess: any CPU of the cluster) → ``map_batches`` with an actor class that
holds the model (a pool of ``ray_actors``, which Ray Data spreads over the nodes, each on a
GPU when the cluster has them) and runs the run's :class:`~layerscope.batch.sink.ManifestSink` itself:
per-item files, maps-store shards, summary-sum partials and the manifest part go straight to
the run folder (a path every node sees, or an fsspec URI). Only a small record per unit
(counts, seconds, the writer) comes back to the driver, which merges the small statistics at
the end (:func:`~layerscope.batch.merge.merge_run`). The resume rule is the local engine's:
an item is done exactly when its manifest part is committed (atomic rename, or one put).

A Ray started here is shut down on every exit path; its processes are started so that they
die with this one (a SIGKILL of the run leaves no Ray agent behind), and a local Ray left by
an earlier killed run is not reused (:func:`layerscope.cluster.connect_ray`, shared with evaluate's
engine). Ray is imported only here and there (``pip install "layerscope[ray]"``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from layerscope.batch import manifest, maps_store
from layerscope.batch.engine import Explained, Job
from layerscope.batch.sink import ManifestSink, RunContext, writer_error
from layerscope.batch.sources import Item, Source
from layerscope.cluster import connect_ray
from layerscope.errors import OutputError

#: The engine's model actors write the run's output themselves (see :mod:`~layerscope.batch.engine`).
WRITES_OWN_OUTPUT = True
#: Batches per unit at most (a unit is also at most ``commit_every`` items): what one actor
#: call holds, and what a rerun redoes when the actor dies.
UNIT_BATCHES = 4


def plan(items: Sequence[Item], unit_size: int, base: int) -> list[dict[str, Any]]:
    """The units of a run: ``unit_size`` items each (the last fewer), unit ``k`` committing
    manifest part ``base + k`` (and ``base + k + len(units)`` … when its maps change shape), as
    rows for ``ray.data.from_items`` (the items as JSON: a path, a URI or an index)."""
    chunks = [items[i : i + unit_size] for i in range(0, len(items), unit_size)]
    return [
        {"part": base + k, "step": len(chunks), "items": json.dumps([[it.key, it.ref, it.kind] for it in chunk])}
        for k, chunk in enumerate(chunks)
    ]


def _read(
    batch: dict[str, np.ndarray], source: Source, preprocess: Callable, shard: Any, keep: bool, side: int | None
) -> dict[str, np.ndarray]:
    """Reader stage (Ray tasks): a unit's items → its pickled
    :class:`~layerscope.batch.capture.Prepared` records.

    Tasks, not an actor pool: a task holds its CPU only while it reads, so when a node dies
    the model actor Ray restarts elsewhere always finds the CPU it needs (reader actors
    holding every CPU of the surviving nodes would leave it waiting for ever).
    """
    from layerscope.batch.capture import prepare

    out = []
    for items in batch["items"]:
        prepared = [
            prepare(source, Item(str(k), ref, str(kind)), preprocess, shard, keep, side)
            for k, ref, kind in json.loads(items)
        ]
        out.append(pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL))
    return {"part": batch["part"], "step": batch["step"], "prepared": np.asarray(out, dtype=object)}


def _actor_label() -> str:
    """This actor as a manifest row's ``writer``: ``host/node:ID/actor:ID`` (12 hex digits each)."""
    import ray

    rc = ray.get_runtime_context()
    return f"{socket.gethostname()}/node:{rc.get_node_id()[:12]}/actor:{(rc.get_actor_id() or 'none')[:12]}"


class _Explain:
    """Model and writer stage: an actor holding the model (placed on the actor's accelerator by
    its capture adapter) that explains a unit ``batch_size`` items at a time and writes it
    with its own :class:`~layerscope.batch.sink.ManifestSink`; returns a small record (the
    counts and seconds, or the error that stopped the writing: Ray would carry an exception
    back only as text)."""

    def __init__(self, model_bytes: bytes, params: dict[str, Any], ctx: RunContext, batch_size: int) -> None:
        self.model = pickle.loads(model_bytes)
        self.params, self.ctx, self.batch_size = params, ctx, batch_size
        from layerscope.capture import adapter_for

        adapter = adapter_for(self.model)
        if adapter.accelerators():  # the actor's GPU
            adapter.move(self.model, adapter.resolve_device("auto"))
        self.writer = _actor_label()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [
            self._unit(int(part), int(step), pickle.loads(blob))
            for part, step, blob in zip(batch["part"], batch["step"], batch["prepared"], strict=True)
        ]
        return {"record": np.asarray([json.dumps(r) for r in records], dtype=object)}

    def _unit(self, part: int, step: int, prepared: list[Any]) -> dict[str, Any]:
        from layerscope.batch.capture import explain_safely

        ctx = dataclasses.replace(
            self.ctx, part_start=part, part_step=step, writer=self.writer, commit_every=max(1, len(prepared))
        )
        sink = ManifestSink(ctx)
        sink.on_write_start()
        capture = 0.0
        try:
            for i in range(0, len(prepared), self.batch_size):
                payloads, seconds = explain_safely(self.model, prepared[i : i + self.batch_size], self.params)
                capture += seconds
                sink.write(payloads)
            sink.on_write_complete()
        except Exception as e:  # a full disk …: the driver ends the run with this error
            sink.on_write_failed(e)
            return {"n": len(prepared), "failed": writer_error(e), "writer": self.writer}
        except BaseException as e:
            sink.on_write_failed(e)
            raise
        return {
            "n": len(prepared),
            "ok": sink.ok,
            "errors": sink.errors,
            "capture": capture,
            "decode": sum(p.seconds for p in prepared),
            "others": sum(p.other_shard for p in prepared),
            "seconds": sink.seconds,
            "writer": self.writer,
        }


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


#: The environment variable that marks every process of a run's Ray (see :func:`start_reaper`).
RUN_TOKEN = "LAYERSCOPE_RUN_TOKEN"


def _marked(token: bytes, me: int) -> list[int]:
    """The processes whose environment holds ``RUN_TOKEN=token`` (other than ``me``)."""
    out = []
    needle = RUN_TOKEN.encode() + b"=" + token + b"\0"
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read() + b"\0":
                    out.append(int(name))
        except OSError:
            continue
    return out


def start_reaper(parent: int) -> int | None:
    """Fork a watchdog that, when ``parent`` dies (a SIGKILL included), kills what it
    started: Ray's raylet, agents and workers, which would otherwise outlive a killed run.

    ``parent``'s environment gets a fresh ``LAYERSCOPE_RUN_TOKEN`` first, which every program
    it starts from then on inherits (Ray's raylet, agents and workers, however they re-parent
    themselves; ``/proc/PID/environ`` shows a process's environment as its program started, so
    a bare fork without an exec is found by the tree only). The
    watchdog keeps a list of ``parent``'s descendants as well; once ``parent`` is gone it
    kills those and, for two seconds, every process that carries the token (one started while
    the tree was being torn down included). Call it in ``parent`` before Ray starts. Returns
    its pid (``None`` where there is no ``/proc``); :func:`stop_reaper` ends it after a normal
    shutdown."""
    if not os.path.isdir("/proc"):
        return None
    token = os.urandom(16).hex()
    os.environ[RUN_TOKEN] = token
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
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            for p in _marked(token.encode(), me):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        os._exit(0)


def stop_reaper(pid: int | None) -> None:
    """End the watchdog of :func:`start_reaper` (Ray was shut down normally)."""
    if pid is None:
        return
    os.environ.pop(RUN_TOKEN, None)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _explained(record: dict[str, Any]) -> Explained:
    """A unit's record as the engine loop's :class:`Explained`; a unit whose writing failed
    ends the run with the writer's error (as the local writer pool's does)."""
    if record.get("failed") is not None:
        raise OutputError(f"the writer failed: {record['failed']} ({record['writer']})")
    return Explained(
        [],
        n=record["n"],
        capture=record["capture"],
        decode=record["decode"],
        others=record["others"],
        written=(record["ok"], record["errors"]),
        write_seconds=record["seconds"],
    )


def batches(job: Job, ctx: RunContext) -> Iterator[Explained]:
    """Run the pending items through Ray Data, written by the model actors (see the module);
    yields one :class:`Explained` record (counts, seconds) per committed unit."""
    cfg = job.config
    started = False
    reaper = None
    try:
        local = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
        reaper = start_reaper(os.getpid()) if local else None  # before Ray starts its threads
        started = connect_ray(cfg.ray_address)
        import ray
        import ray.data

        dctx = ray.data.DataContext.get_current()
        dctx.enable_progress_bars = False
        from layerscope.capture import adapter_for

        gpus = 1 if adapter_for(job.model).accelerators() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        unit = max(1, min(cfg.commit_every, UNIT_BATCHES * cfg.batch_size))
        units = plan(job.pending, unit, manifest.next_part_number(ctx.run_dir, ctx.tag))
        ds = ray.data.from_items(units, override_num_blocks=len(units))
        ds = ds.map_batches(
            _read,
            fn_kwargs={
                "source": job.source,
                "preprocess": job.preprocess,
                "shard": job.shard,
                "keep": job.params["keep_image"],
                "side": job.params.get("image_side"),
            },
            batch_size=1,
            batch_format="numpy",
        )
        ds = ds.map_batches(
            _Explain,
            fn_constructor_args=(pickle.dumps(job.model), job.params, ctx, cfg.batch_size),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.ray_actors),
            num_gpus=gpus,
        )
        for out in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            for text in out["record"]:
                yield _explained(json.loads(text))
        # every unit is committed, so no writer of this run is left: what a killed one left
        # (temporary files; a maps file whose part another actor then wrote) goes now
        manifest.remove_parts(ctx.run_dir, ctx.tag, everywhere=job.shard is None or job.shard[1] == 1)
        maps_store.remove_orphans(ctx.run_dir, ctx.tag)
    finally:
        if started:
            import ray

            ray.shutdown()
        stop_reaper(reaper)
