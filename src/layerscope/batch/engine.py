"""The one engine loop: pull explained batches from an engine, hand them to the writer pool,
count, time, show progress, and on any failure (Ctrl-C included) commit what is whole.

An engine (:mod:`~layerscope.batch.local_engine`, :mod:`~layerscope.batch.ray_engine`) only
yields :class:`Explained` batches; everything else a run does per batch is here, once. An
engine whose workers write their own output (``WRITES_OWN_OUTPUT = True``: the Ray engine)
yields batches that carry only what was written (:attr:`Explained.written`): no writer pool
is started, and the loop only counts.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from layerscope.batch.sink import RunContext
from layerscope.batch.writer import WriterPool

#: Engine name → the module whose ``batches(job, ctx)`` yields :class:`Explained` batches.
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
    #: ``(ok, errors)`` committed by the engine's own writer (its ``payloads`` are then empty);
    #: ``None``: the payloads go to the writer pool
    written: tuple[int, int] | None = None
    #: the engine's own writer's seconds (``render_write``, ``commit``)
    write_seconds: dict[str, float] = field(default_factory=dict)


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


class Written:
    """The counts of an engine whose workers write their own output, in the writer pool's
    place (the same :meth:`stop`, :meth:`abort` and :meth:`account`)."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.seconds: dict[str, float] = {"render_write": 0.0, "commit": 0.0}

    def add(self, b: Explained) -> None:
        """Count one batch the engine's workers committed."""
        assert b.written is not None
        self.ok += b.written[0]
        self.errors += b.written[1]
        for k, v in b.write_seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def stop(self) -> None:
        """Nothing to wait for: every batch counted was committed by its worker."""

    def abort(self) -> None:
        """Nothing to end here (the engine ends its workers)."""

    def account(self, result: Any, timings: dict[str, float]) -> None:
        """The counts and times into the run's result (as :meth:`WriterPool.account`)."""
        result.errors = self.errors
        result.done = self.ok + self.errors
        timings.update(self.seconds)
        result.timings = timings


def run_engine(name: str, job: Job, ctx: RunContext, writers: int, bar: Any, result: Any) -> None:
    """Run ``job`` on engine ``name``: every batch to the writer pool (or counted, when the
    engine's workers wrote it); the counts, times and progress into ``result`` and ``bar``."""
    engine = importlib.import_module(ENGINES[name])
    timings = {"wait_data": 0.0, "capture": 0.0, "wait_writer": 0.0, "decode": 0.0}
    own = getattr(engine, "WRITES_OWN_OUTPUT", False)
    pool: WriterPool | Written = Written() if own else WriterPool(ctx, writers)  # forked before any thread
    batches: Iterator[Explained] | None = None
    try:
        batches = engine.batches(job, ctx)
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
            if b.written is not None and isinstance(pool, Written):
                pool.add(b)
                bar.update(b.n, b.written[1])
                continue
            assert isinstance(pool, WriterPool)
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
