"""The one engine loop: pull explained batches from an engine, hand them to the writer pool,
count, time, show progress, and on any failure (Ctrl-C included) commit what is whole.

An engine (:mod:`~layerscope.batch.local_engine`, :mod:`~layerscope.batch.ray_engine`) only
yields :class:`Explained` batches; everything else a run does per batch is here, once.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from layerscope.batch.sink import RunContext
from layerscope.batch.writer import WriterPool

#: Engine name → the module whose ``batches(job)`` yields :class:`Explained` batches.
ENGINES = {"local": "layerscope.batch.local_engine", "ray": "layerscope.batch.ray_engine"}


@dataclass
class Explained:
    """One batch as an engine gives it: the writer payloads and what it cost."""

    payloads: list[dict[str, Any]]
    #: items of the batch (other shards' included)
    n: int
    #: seconds in ``explain``
    capture: float = 0.0
    #: seconds spent reading and preprocessing, summed over the readers
    decode: float = 0.0
    #: items that belong to other shards
    others: int = 0


@dataclass
class Job:
    """What an engine needs to explain the pending items of a run."""

    source: Any
    pending: list[Any]
    model: Any
    preprocess: Any
    params: dict[str, Any]
    shard: tuple[int, int] | None
    config: Any


def run_engine(name: str, job: Job, ctx: RunContext, writers: int, bar: Any, result: Any) -> None:
    """Run ``job`` on engine ``name``: every batch to the writer pool; the counts, times and
    progress into ``result`` and ``bar``."""
    engine = importlib.import_module(ENGINES[name])
    timings = {"wait_data": 0.0, "capture": 0.0, "wait_writer": 0.0, "decode": 0.0}
    pool = WriterPool(ctx, writers)  # forked before an engine starts any thread
    batches: Iterator[Explained] | None = None
    try:
        batches = engine.batches(job)
        while True:
            t0 = time.perf_counter()
            try:
                b = next(batches)
            except StopIteration:
                break
            timings["wait_data"] += time.perf_counter() - t0
            timings["decode"] += b.decode
            timings["capture"] += b.capture
            result.other_shards += b.others
            timings["wait_writer"] += pool.put(("items", b.payloads))
            bar.update(b.n, sum(1 for p in b.payloads if p.get("error") is not None))
        pool.stop()
    except BaseException:
        pool.abort()
        raise
    finally:
        if batches is not None:
            close = getattr(batches, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()  # the engine's finally: readers ended, a Ray it started shut down
        pool.account(result, timings)
