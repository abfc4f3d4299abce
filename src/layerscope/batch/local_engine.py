"""The local engine: reader processes (a torch ``DataLoader``, the one place batch uses it)
read, decode, hash and preprocess the items; this process explains each batch.

It only yields :class:`~layerscope.batch.engine.Explained` batches; the loop around it
(writers, progress, timing, abort) is :func:`layerscope.batch.engine.run_engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from layerscope.batch.capture import Prepared, explain_safely, prepare
from layerscope.batch.engine import Explained, Job
from layerscope.batch.sink import RunContext
from layerscope.batch.sources import Item, Source


def _identity(batch: list[Prepared]) -> list[Prepared]:
    return batch


def _reader_init(worker_id: int) -> None:
    """A reader process dies with the run (a killed run's reader could otherwise hang on a
    full queue nobody reads), with numpy's BLAS on one thread."""
    from layerscope.batch.writer import _die_with_parent, one_blas_thread

    _die_with_parent()
    one_blas_thread()


class _Items:
    """A map-style dataset of the pending items (read by the DataLoader's workers)."""

    def __init__(self, source: Source, items: Sequence[Item], preprocess: Callable, shard: Any, params: dict) -> None:
        self.source, self.items, self.preprocess, self.shard = source, items, preprocess, shard
        self.keep, self.side = params["keep_image"], params.get("image_side")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Prepared:
        return prepare(self.source, self.items[i], self.preprocess, self.shard, self.keep, self.side)


def batches(job: Job, ctx: RunContext) -> Iterator[Explained]:
    """The pending items of ``job``, ``job.config.batch_size`` at a time, explained (for the
    writer pool, which writes them as ``ctx`` says)."""
    from torch.utils.data import DataLoader

    cfg = job.config
    dataset = _Items(job.source, job.pending, job.preprocess, job.shard, job.params)
    loader_kw: dict[str, Any] = {}
    if cfg.workers > 0:
        loader_kw = {
            "multiprocessing_context": "fork",
            "prefetch_factor": 2,
            "persistent_workers": False,
            "worker_init_fn": _reader_init,
        }
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=_identity, **loader_kw)
    it = iter(loader)
    try:
        for batch in it:
            payloads, seconds = explain_safely(job.model, batch, job.params)
            yield Explained(
                payloads,
                n=len(batch),
                capture=seconds,
                decode=sum(p.seconds for p in batch),
                others=sum(p.other_shard for p in batch),
            )
    finally:
        del it  # the readers end
