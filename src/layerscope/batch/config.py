"""What a dataset run is asked to do: :class:`SourceSpec` (where the items come from) and
:class:`RunConfig` (everything else), checked once, before any work.

The save kinds are the output registry's extensions (:data:`layerscope.outputs.WRITERS`),
read when a run is checked: a writer registered by a user is a valid ``save`` kind without
touching batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from layerscope.errors import UsageError, unknown_name

#: Progress modes.
PROGRESS = ("auto", "bar", "log", "none")
#: Save kinds that are not per-item files: ``maps``, the run's columnar maps store
#: (:mod:`~layerscope.batch.maps_store`).
STORE_KINDS = ("maps",)


def save_kinds() -> list[str]:
    """The per-item output kinds: every extension of the output registry, without its dot."""
    from layerscope import outputs

    return [ext.lstrip(".") for ext in outputs.WRITERS]


def draws_image(kind: str) -> bool:
    """Whether the writer of ``kind`` draws over the image (then payloads keep the display image)."""
    if kind in STORE_KINDS:
        return False
    from layerscope import outputs

    w = outputs.WRITERS["." + kind]
    return bool(w.draws_frames or w.per_image)


def parse_save(save: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"npz,gif"`` / ``["npz", "gif"]`` / ``"none"`` → the kinds, checked against the registry
    (and :data:`STORE_KINDS`)."""
    if save is None:
        return ("npz",)
    items = [
        s.strip().lower().lstrip(".") for s in (save.split(",") if isinstance(save, str) else save) if s and s.strip()
    ]
    if items == ["none"]:
        return ()
    kinds = [*STORE_KINDS, *save_kinds()]
    if not items:
        raise UsageError(f"unknown --save kind (empty); use any of {', '.join(kinds)} or none")
    for s in items:
        if s not in kinds:
            raise UsageError(unknown_name("--save kind", s, [*kinds, "none"]))
    return tuple(dict.fromkeys(items))


def _whole(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{name} must be a whole number of at least {least}, not {value!r}")


@dataclass
class SourceSpec:
    """Where a run's items come from: exactly one of ``source`` (a folder, a glob, a list
    file, a list of paths, a Parquet/Arrow table, WebDataset tar shards, a saved Hugging Face
    dataset, any of them as an fsspec URI, or a :class:`~layerscope.batch.sources.Source`),
    ``cifar10`` or ``shapes``. The columns name a table's or dataset's image, id and label."""

    source: Any = None
    cifar10: bool = False
    split: str = "test"
    cifar10_path: str | os.PathLike[str] | None = None
    shapes: int | None = None
    shapes_seed: int = 1
    limit: int | None = None
    image_column: str | None = None
    id_column: str | None = None
    label_column: str | None = None

    def open(self) -> Any:
        """The :class:`~layerscope.batch.sources.Source`."""
        from layerscope.batch.sources import open_source
        from layerscope.batch.streams import open_stream

        if self.source is not None and not self.cifar10 and self.shapes is None:
            columns = {"image_column": self.image_column, "id_column": self.id_column}
            stream = open_stream(self.source, **columns, label_column=self.label_column, split=self.split)
            if stream is not None:
                return stream

        return open_source(
            self.source,
            cifar10=self.cifar10,
            split=self.split,
            cifar10_path=self.cifar10_path,
            shapes=self.shapes,
            shapes_seed=self.shapes_seed,
            limit=self.limit,
        )


@dataclass
class RunConfig:
    """How a run explains and writes its items (see :func:`layerscope.run_dataset` for each
    field's meaning). :meth:`check` validates it and returns the parsed save kinds."""

    out_dir: str | os.PathLike[str] = "layerscope-run"
    layers: str | Sequence[str] | None = None
    method: str = "gradcam"
    target: int | str | None = None
    save: str | Sequence[str] | None = "npz"
    maps_dtype: str = "float32"
    batch_size: int = 32
    workers: int = 2
    writers: int | None = None
    shard: str | tuple[int, int] | None = None
    engine: str = "local"
    overwrite: bool = False
    report: bool = False
    render: Any = None
    preprocess: Any = None
    info: Any = None
    progress: str = "auto"
    log_every: int = 500
    commit_every: int = 256
    method_options: dict[str, Any] = field(default_factory=dict)
    explain_options: dict[str, Any] = field(default_factory=dict)
    ray_actors: int = 1
    ray_address: str | None = None
    retry_errors: bool = True
    recheck: bool = False

    def check(self) -> tuple[str, ...]:
        """Every check that needs no model and no data; returns the save kinds.

        Raises:
            UsageError: a bad option.
        """
        from layerscope.batch.engine import ENGINES

        kinds = parse_save(self.save)
        if self.engine not in ENGINES:
            raise UsageError(unknown_name("engine", self.engine, list(ENGINES)))
        if self.progress not in PROGRESS:
            raise UsageError(unknown_name("progress mode", self.progress, list(PROGRESS)))
        for name in ("batch_size", "commit_every", "log_every", "ray_actors"):
            _whole(name, getattr(self, name), 1)
        from layerscope.batch.maps_store import check_dtype

        self.maps_dtype = check_dtype(self.maps_dtype)
        _whole("workers", self.workers, 0)
        if self.writers is not None:
            _whole("writers", self.writers, 1)
        return kinds

    def writer_count(self, kinds: Sequence[str]) -> int:
        """``writers``, or by default 1, and up to 4 when the outputs are drawn."""
        if self.writers is not None:
            return self.writers
        drawn = any(draws_image(k) for k in kinds if k != "npz")
        return min(4, max(1, (os.cpu_count() or 2) // 2)) if drawn else 1
