"""Reading a run back: :func:`open_run` (``layerscope.open_run``).

A :class:`RunReader` reads what it is asked for and nothing else: the manifest (a few of its
columns to find an item), one memory-mapped maps file for one item, one column of each maps
file for one layer. Maps come as float32 arrays: read-only views into the memory map for a
float32 store, computed from the stored values and scales for ``--maps-dtype float16``
(read from the map, converted on the fly); a run saved with
``--save npz`` instead is read from its per-item ``.npz`` files.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.batch import manifest, maps_store
from layerscope.errors import UsageError

__all__ = ["LayerMaps", "RunReader", "open_run"]

#: Maps files kept open (memory-mapped) at once.
OPEN_SHARDS = 8


def open_run(run_dir: str | os.PathLike[str]) -> RunReader:
    """Open a run folder written by ``layerscope batch`` / :func:`layerscope.run_dataset`.

    Example::

        run = layerscope.open_run("runs/val")
        run.manifest                      # a pyarrow Table, one row per item
        run.maps(run.items[0])            # {layer: (h, w) array} of one item
        for key, cam in run.layer("block5_conv3").items(): ...
        run.layer("block5_conv3").stack() # (n, h, w), reading only that column

    Raises:
        UsageError: the folder holds no run.
    """
    return RunReader(run_dir)


class RunReader:
    """A run folder, read lazily (see the module).

    Attributes:
        run_dir: the run folder.
        layers: the run's layers, in forward order.
        record: the run file (``run.json``) as a dict.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        record = manifest.read_run_file(self.run_dir)
        if record is None:
            raise UsageError(f"{self.run_dir}: holds no run.json (is it a layerscope batch run folder?)")
        self.record = record
        self.layers: list[str] = list(record.get("layers") or [])
        self._manifest: Any = None
        self._index: dict[str, tuple[str | None, int | None, list[str], str]] | None = None
        self._keys: list[str] | None = None
        self._open: OrderedDict[str, Any] = OrderedDict()

    def __repr__(self) -> str:
        return f"<layerscope run {self.run_dir}: {len(self.items)} items, {len(self.layers)} layers>"

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self, columns: list[str] | None = None) -> Any:
        import pyarrow.parquet as pq

        merged = self.run_dir / manifest.MANIFEST
        parts = [self.run_dir / rel for rel in manifest.part_files(self.run_dir)]  # relative strings
        if merged.is_file() and all(p.stat().st_mtime <= merged.stat().st_mtime for p in parts):
            names = pq.read_schema(merged).names
            return pq.read_table(merged, columns=[c for c in columns if c in names] if columns else None)
        if not parts:
            raise UsageError(f"{self.run_dir}: holds no manifest parts yet")
        import pyarrow as pa

        tables = []
        for p in parts:
            names = pq.read_schema(p).names
            tables.append(pq.read_table(p, columns=[c for c in columns if c in names] if columns else None))
        return pa.concat_tables(tables, promote_options="default").sort_by("key")

    @property
    def manifest(self) -> Any:
        """Every committed row, sorted by key, as a ``pyarrow.Table`` (read once)."""
        if self._manifest is None:
            self._manifest = self._read_manifest()
        return self._manifest

    def to_pandas(self) -> Any:
        """The manifest as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise UsageError("RunReader.to_pandas() needs pandas: pip install pandas") from None
        return self.manifest.to_pandas()

    def _where(self) -> dict[str, tuple[str | None, int | None, list[str], str]]:
        if self._index is None:
            t = self._read_manifest(["key", "status", "maps_shard", "maps_row", "outputs"]).to_pydict()
            n = len(t["key"])
            shards, rows = t.get("maps_shard", [None] * n), t.get("maps_row", [None] * n)
            outs = t.get("outputs", [[]] * n)
            self._index = {
                k: (s, r, list(o or []), str(st))
                for k, s, r, o, st in zip(t["key"], shards, rows, outs, t["status"], strict=True)
            }
            self._keys = list(t["key"])
        return self._index

    @property
    def items(self) -> list[str]:
        """Every item's key (errors included), sorted."""
        self._where()
        assert self._keys is not None
        return self._keys

    # ------------------------------------------------------------------ maps
    def _shard(self, rel: str) -> Any:
        table = self._open.get(rel)
        if table is None:
            table = maps_store.open_shard(self.run_dir / rel)
            self._open[rel] = table
            while len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(rel)
        return table

    def maps(self, item: str | int) -> dict[str, np.ndarray]:
        """One item's maps, ``{layer: (h, w) array}``, reading only its maps file (or its ``.npz``).

        Args:
            item: a key of :attr:`items`, or its index there.

        Raises:
            KeyError: no such item.
            UsageError: the item is an error row, or the run saved no maps.
        """
        key = self.items[item] if isinstance(item, int) else item
        where = self._where().get(key)
        if where is None:
            raise KeyError(f"{key!r} is not an item of {self.run_dir}")
        shard, row, outputs, status = where
        if not status.startswith("ok"):
            raise UsageError(f"{key}: has no maps ({status})")
        if shard is not None and row is not None:
            return maps_store.row_maps(self._shard(shard), int(row), self.layers)
        npz = [o for o in outputs if o.endswith(".npz")]
        if npz:
            with np.load(self.run_dir / npz[0], allow_pickle=False) as z:
                return {name: z[f"cam/{name}"][0] for name in self.layers}
        raise UsageError(f"{key}: the run saved no maps (run it with --save maps or npz)")

    def layer(self, name: str) -> LayerMaps:
        """One layer's maps across the items that have them, read lazily (see :class:`LayerMaps`)."""
        if name not in self.layers:
            from layerscope.errors import unknown_name

            raise UsageError(unknown_name("layer", name, self.layers))
        return LayerMaps(self, name)


class LayerMaps:
    """One layer's maps across a run's items (those with maps in the store), in the store's
    order; iterating reads one column of one maps file at a time.

    ``len()``, ``keys``, iteration (one ``(h, w)`` view per item), :meth:`items` (``(key,
    map)``), :meth:`batches` (``(keys, (n, h, w))`` per record batch, without a copy) and
    :meth:`stack` (one ``(n, h, w)`` array: the only call that copies them all).
    """

    def __init__(self, run: RunReader, name: str) -> None:
        self.run, self.name = run, name
        rows = [(s, int(r), k) for k, (s, r, _, st) in run._where().items() if s is not None and r is not None]
        rows.sort()
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def keys(self) -> list[str]:
        """The items' keys, in iteration order."""
        return [k for _, _, k in self._rows]

    def batches(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(keys, maps)`` per contiguous run of rows of one record batch: ``maps`` is an
        ``(n, h, w)`` view into the memory map."""
        i = 0
        while i < len(self._rows):
            shard = self._rows[i][0]
            table = self.run._shard(shard)
            start = 0
            for c, chunk in enumerate(table.column(self.name).chunks):
                stop = start + len(chunk)
                keys, idx = [], []
                while i < len(self._rows) and self._rows[i][0] == shard and self._rows[i][1] < stop:
                    keys.append(self._rows[i][2])
                    idx.append(self._rows[i][1] - start)
                    i += 1
                if keys:
                    arr = maps_store.chunk_maps(table, self.name, c)
                    lo, hi = idx[0], idx[-1] + 1
                    contiguous = idx == list(range(lo, hi))
                    yield keys, (arr[lo:hi] if contiguous else arr[idx])
                start = stop
            if i < len(self._rows) and self._rows[i][0] == shard:
                raise UsageError(f"{shard}: holds fewer rows than the manifest lists")

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(key, (h, w) map)`` for every item."""
        for keys, maps in self.batches():
            yield from zip(keys, maps, strict=True)

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, cam in self.items():
            yield cam

    def stack(self) -> np.ndarray:
        """Every item's map as one ``(n, h, w)`` array (in memory; the layer's column only).

        Raises:
            UsageError: the maps' shapes differ between maps files (inputs of several sizes).
        """
        parts = [maps for _, maps in self.batches()]
        if not parts:
            return np.zeros((0, 0, 0), np.float32)
        if len({p.shape[1:] for p in parts}) > 1:
            raise UsageError(f"{self.name}: the maps have several shapes; iterate instead of stacking")
        return np.concatenate(parts, axis=0)
