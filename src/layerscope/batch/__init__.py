"""Dataset runs: explain every image of a folder, a glob, a list, CIFAR-10 or the shapes
dataset into a run folder — per-item outputs, a Parquet manifest, per-class mean maps, an
index page — resumably, in shards, or on a Ray cluster.

The entry point is :func:`run_dataset` (``layerscope.run_dataset``); :func:`merge_run` merges
the shards of a run; :func:`open_run` reads a run back. Frameworks, pyarrow and Ray are imported only when a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "RunConfig",
    "RunReader",
    "RunResult",
    "SourceSpec",
    "merge_run",
    "open_run",
    "read_manifest",
    "run_config",
    "run_dataset",
]

_LAZY = {
    "run_dataset": "layerscope.batch.run",
    "merge_run": "layerscope.batch.merge",
    "RunResult": "layerscope.batch.run",
    "run_config": "layerscope.batch.run",
    "RunConfig": "layerscope.batch.config",
    "SourceSpec": "layerscope.batch.config",
    "read_manifest": "layerscope.batch.manifest",
    "open_run": "layerscope.batch.run_reader",
    "RunReader": "layerscope.batch.run_reader",
}

if TYPE_CHECKING:
    from layerscope.batch.config import RunConfig, SourceSpec
    from layerscope.batch.manifest import read_manifest
    from layerscope.batch.merge import merge_run
    from layerscope.batch.run import RunResult, run_config, run_dataset
    from layerscope.batch.run_reader import RunReader, open_run


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'layerscope.batch' has no attribute {name!r}")
