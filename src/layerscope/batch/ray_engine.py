"""The Ray Data engine: the same run, its stages spread over a Ray cluster.

``from_items`` (the pending items) → ``map_batches`` of reader tasks (decode, hash,
preprocess: any CPU of the cluster) → ``map_batches`` with an actor class that holds the
model (one per ``ray_actors``, each on a GPU when the cluster has them) → the driver, which
feeds the same writer process as the local engine. The manifest, the maps and the resume
are therefore those of the local engine; what moves between machines are the preprocessed
inputs and the per-item maps, never files.

Ray is imported only here (``pip install "layerscope[ray]"``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from layerscope.batch.sources import Item, Source
from layerscope.errors import UsageError


class _Read:
    """Reader stage: items → pickled :class:`~layerscope.batch.capture.Prepared` records."""

    def __init__(self, source: Source, preprocess: Callable, shard: Any, keep: bool) -> None:
        self.source, self.preprocess, self.shard, self.keep = source, preprocess, shard, keep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from layerscope.batch.capture import prepare

        out = []
        for key, ref, kind in zip(batch["key"], batch["ref"], batch["kind"], strict=True):
            ref = int(ref) if kind != "file" else str(ref)
            p = prepare(self.source, Item(str(key), ref, str(kind)), self.preprocess, self.shard, self.keep)
            out.append(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL))
        return {"prepared": np.asarray(out, dtype=object)}


class _Explain:
    """Model stage: an actor holding the model; prepared records → pickled writer payloads."""

    def __init__(self, model_bytes: bytes, params: dict[str, Any]) -> None:
        self.model = pickle.loads(model_bytes)
        self.params = params
        with contextlib.suppress(ImportError):
            import torch

            if isinstance(self.model, torch.nn.Module) and torch.cuda.is_available():  # the actor's GPU
                self.model.to("cuda")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from layerscope.batch.run import _explain_safely

        prepared = [pickle.loads(b) for b in batch["prepared"]]
        payloads, seconds = _explain_safely(self.model, prepared, self.params)
        others = sum(p.other_shard for p in prepared)
        decode = sum(p.seconds for p in prepared)
        record = {"payloads": payloads, "seconds": seconds, "others": others, "decode": decode, "n": len(prepared)}
        return {"result": np.asarray([pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)], dtype=object)}


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` / ``RAY_ADDRESS``, else start a local Ray; returns whether it was started here."""
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
    ray.init(address=address, **kwargs)
    return True


def run_ray(
    src: Source,
    pending: Sequence[Item],
    ctx: Any,
    model: Any,
    prep: Callable,
    params: dict[str, Any],
    bar: Any,
    result: Any,
    batch_size: int,
    shard: Any,
    actors: int,
    address: str | None,
    writers: int = 1,
) -> None:
    """Run ``pending`` through Ray Data into the writer (see the module)."""
    from layerscope.batch.run import _Writer

    writer = _Writer(ctx, writers)  # forked before Ray starts its threads
    timings = {"wait_data": 0.0, "capture": 0.0, "wait_writer": 0.0, "decode": 0.0}
    started = False
    try:
        started = _init_ray(address)
        import ray
        import ray.data

        dctx = ray.data.DataContext.get_current()
        dctx.enable_progress_bars = False
        gpus = 0
        try:
            import torch

            gpus = 1 if torch.cuda.is_available() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        except ImportError:  # pragma: no cover
            pass
        rows = [{"key": it.key, "ref": str(it.ref), "kind": it.kind} for it in pending]
        ds = ray.data.from_items(rows)
        ds = ds.map_batches(
            _Read,
            fn_constructor_args=(src, prep, shard, params["keep_image"]),
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=(1, max(1, int(ray.cluster_resources().get("CPU", 2)) - actors)),
        )
        ds = ds.map_batches(
            _Explain,
            fn_constructor_args=(pickle.dumps(model), params),
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=actors,
            num_gpus=gpus,
        )
        t0 = time.perf_counter()
        for out in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            timings["wait_data"] += time.perf_counter() - t0
            for blob in out["result"]:
                record = pickle.loads(blob)
                timings["capture"] += record["seconds"]
                timings["decode"] += record["decode"]
                result.other_shards += record["others"]
                payloads = record["payloads"]
                timings["wait_writer"] += writer.put(("items", payloads))
                bar.update(record["n"], sum(1 for p in payloads if p.get("error") is not None))
            t0 = time.perf_counter()
        writer.stop()
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.account(result, timings)
        if started:
            import ray

            ray.shutdown()
