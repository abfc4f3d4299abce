"""The run's columnar maps store (``--save maps``): the maps of many items per file.

Layout: ``RUN_DIR/maps/<shard>/part-NNNNNN.arrow``, one file per manifest part (the same
number: the items a writer committed together), in the **Arrow IPC file format**,
uncompressed: a ``key`` column and one column per layer of type
``arrow.fixed_shape_tensor`` (``(h, w)`` at the layer's own resolution, ``float32`` or
``float16``; a float16 map is stored divided by its largest absolute value, kept in float32
in the ``__scales__`` column, so its error is a fraction of its own peak whatever its
magnitude — Grad-CAM values of 1e-4 and below are common, where plain float16 has only a
few significant bits). Each item's manifest row records ``maps_shard`` (the file, relative to
``RUN_DIR``) and ``maps_row`` (its row in the file).

Why Arrow IPC rather than Parquet or Zarr (see ``docs/datasets.md``): an uncompressed IPC
file is memory-mapped and read without a copy — one item is a slice of one file, one layer
across items is one column of each file, nothing else is touched —; it is written as a
stream of record batches (a writer never holds a whole shard) with no encoding cost; and
pyarrow, which the manifest needs anyway, reads and writes it.

A shard is written under a temporary ``.part-NNNNNN.arrow.*.part`` name and renamed
(:func:`layerscope.atomic.atomic_path`) when complete, *before* the manifest part that lists
its items; so an item is done exactly when its manifest row is committed, and a shard left
by a killed run is complete. One whose manifest part never came is an orphan:
:func:`remove_orphans` deletes it when the run is resumed (its items are done again).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.atomic import atomic_path
from layerscope.errors import OutputError, UsageError

#: The store's folder in a run folder.
MAPS_DIR = "maps"
#: The maps' number types (``--maps-dtype``).
DTYPES = ("float32", "float16")
#: Items buffered before they are written as one record batch.
FLUSH_ROWS = 32
#: The float16 maps' scales: one float32 per layer (in layer order) and item.
SCALES = "__scales__"
#: Schema metadata key holding the layers and the dtype (JSON).
META_KEY = b"layerscope.maps"
_SHARD = re.compile(r"^part-(\d{6})\.arrow$")

__all__ = ["DTYPES", "MAPS_DIR", "ShardWriter", "check_dtype", "remove_orphans", "shard_rel"]


def check_dtype(dtype: Any) -> str:
    """``float32`` or ``float16`` (``np.float16`` and ``"f2"`` accepted); else a :class:`UsageError`."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise UsageError(f"--maps-dtype must be float32 or float16, not {dtype!r}")
    return name


def shard_rel(tag: str, part: int) -> str:
    """The store file of manifest part ``part`` of shard ``tag``, relative to the run folder."""
    return f"{MAPS_DIR}/{tag}/part-{part:06d}.arrow"


def remove_orphans(run_dir: Any, tag: str) -> int:
    """Delete shard ``tag``'s store files whose manifest part does not exist (written by a
    run killed before it committed that part, or whose part was dropped to redo its items).
    Returns how many were removed (none on object storage, where the store is not written)."""
    from layerscope.batch import fs

    rd = fs.run_dir(run_dir)
    if rd.remote:
        return 0
    d = rd.root / MAPS_DIR / tag
    if not d.is_dir():
        return 0
    parts = rd.root / "manifest" / tag
    n = 0
    for p in d.iterdir():
        m = _SHARD.match(p.name)
        if m and not (parts / f"part-{m.group(1)}.parquet").is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def _tensor_type(dtype: str, shape: Sequence[int]) -> Any:
    import pyarrow as pa

    return pa.fixed_shape_tensor(pa.float16() if dtype == "float16" else pa.float32(), list(shape))


class ShardWriter:
    """One store file being written: items are buffered, written every :data:`FLUSH_ROWS` as
    one record batch to a temporary file, and :meth:`commit` renames it to its final name.

    Every item of a file has the same map shape per layer (:meth:`fits`); the caller starts a
    new file when it does not.
    """

    def __init__(self, path: Path, layers: Sequence[str], dtype: str = "float32") -> None:
        self.path = Path(path)
        self.layers = list(layers)
        self.dtype = check_dtype(dtype)
        self.rows = 0
        self.shapes: dict[str, tuple[int, ...]] | None = None
        self._keys: list[str] = []
        self._maps: dict[str, list[np.ndarray]] = {name: [] for name in self.layers}
        self._scales: list[np.ndarray] = []
        self._stack: contextlib.ExitStack | None = None
        self._file: Any = None
        self._writer: Any = None
        self._schema: Any = None

    def fits(self, cams: Mapping[str, Any]) -> bool:
        """Whether an item with these maps can go in this file (same shape per layer)."""
        return self.shapes is None or all(tuple(np.shape(cams[n])) == self.shapes[n] for n in self.layers)

    def add(self, key: str, cams: Mapping[str, Any]) -> int:
        """Buffer one item's maps (``{layer: (h, w)}``); returns its row in the file."""
        if self.shapes is None:
            self.shapes = {n: tuple(int(s) for s in np.shape(cams[n])) for n in self.layers}
        elif not self.fits(cams):
            raise ValueError(f"{key}: its maps' shapes differ from those of {self.path.name}")
        self._keys.append(key)
        scales = []
        for name in self.layers:
            cam = np.asarray(cams[name], dtype=np.float32)
            if self.dtype == "float16":
                finite = np.abs(cam[np.isfinite(cam)])
                scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
                scales.append(scale)
                cam = cam / np.float32(scale)
            self._maps[name].append(cam.astype(self.dtype, copy=False))
        if scales:
            self._scales.append(np.asarray(scales, np.float32))
        row = self.rows
        self.rows += 1
        if len(self._keys) >= FLUSH_ROWS:
            self._flush()
        return row

    def _open(self) -> None:
        import pyarrow as pa

        assert self.shapes is not None
        fields = [pa.field("key", pa.string())]
        fields += [pa.field(n, _tensor_type(self.dtype, self.shapes[n])) for n in self.layers]
        if self.dtype == "float16":
            fields.append(pa.field(SCALES, _tensor_type("float32", (len(self.layers),))))
        meta = {"layers": self.layers, "dtype": self.dtype, "shapes": {n: list(s) for n, s in self.shapes.items()}}
        self._schema = pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_path(self.path, overwrite=True))
        self._stack = stack
        try:
            self._file = stack.enter_context(pa.OSFile(str(tmp), "wb"))
            self._writer = pa.ipc.new_file(self._file, self._schema)
        except BaseException as e:
            self._fail(e)
            raise

    def _flush(self) -> None:
        if not self._keys:
            return
        import pyarrow as pa

        if self._writer is None:
            self._open()
        try:
            columns = [pa.array(self._keys, pa.string())]
            for name in self.layers:
                stacked = np.ascontiguousarray(np.stack(self._maps[name]))
                columns.append(pa.FixedShapeTensorArray.from_numpy_ndarray(stacked))
            if self.dtype == "float16":
                columns.append(pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(self._scales)))
            self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))
        except BaseException as e:
            self._fail(e)
            raise
        self._keys = []
        self._maps = {name: [] for name in self.layers}
        self._scales = []

    def commit(self) -> None:
        """Write what is buffered, close the file and give it its final name."""
        if self.rows == 0:
            return
        self._flush()
        try:
            self._writer.close()
        except BaseException as e:
            self._fail(e)
            raise
        stack, self._stack = self._stack, None
        assert stack is not None
        stack.close()  # closes the file, fsyncs and renames it

    def _fail(self, error: BaseException) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(BaseException):
                stack.__exit__(type(error), error, error.__traceback__)  # the temporary file removed

    def abort(self) -> None:
        """Forget the file: its temporary file is removed, nothing gets the final name."""
        self._keys = []
        self._fail(OutputError(f"{self.path}: not committed"))


# --------------------------------------------------------------------------- reading


def open_shard(path: Path) -> Any:
    """A store file as an Arrow table over a memory map (nothing is read until used)."""
    import pyarrow as pa

    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise OutputError(f"{path}: cannot read this maps file ({e})") from None


def _scale(table: Any, chunk_index: int, layer: str) -> np.ndarray | None:
    """A float16 file's scales of ``layer`` in one record batch (``None`` for float32)."""
    if SCALES not in table.column_names:
        return None
    k = [n for n in table.column_names if n not in ("key", SCALES)].index(layer)
    return table.column(SCALES).chunk(chunk_index).to_numpy_ndarray()[:, k]


def _real(maps: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """Stored maps as their values: float32 maps as they are (a view), float16 ones times their scales."""
    if scales is None:
        return maps
    return maps.astype(np.float32) * scales.reshape(-1, *([1] * (maps.ndim - 1)))


def column_maps(table: Any, layer: str) -> list[np.ndarray]:
    """One layer's maps of a store table, one ``(n, h, w)`` float32 array per record batch
    (a view into the memory map for a float32 file)."""
    if layer not in table.column_names or layer in ("key", SCALES):
        raise UsageError(f"{layer!r} is not a layer of this maps file")
    return [chunk_maps(table, layer, i) for i in range(table.column(layer).num_chunks)]


def chunk_maps(table: Any, layer: str, chunk_index: int) -> np.ndarray:
    """One layer's maps of one record batch, ``(n, h, w)`` float32 (see :func:`column_maps`)."""
    chunk = table.column(layer).chunk(chunk_index)
    return _real(chunk.to_numpy_ndarray(), _scale(table, chunk_index, layer))


def row_maps(table: Any, row: int, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """One row's maps: ``{layer: (h, w)}`` float32 (views into the memory map for a float32 file)."""
    out = {}
    for name in layers:
        start = 0
        for i, chunk in enumerate(table.column(name).chunks):
            if row < start + len(chunk):
                maps = chunk.slice(row - start, 1).to_numpy_ndarray()
                scales = _scale(table, i, name)
                out[name] = _real(maps, None if scales is None else scales[row - start : row - start + 1])[0]
                break
            start += len(chunk)
        else:
            raise IndexError(f"row {row} is not in this maps file ({table.num_rows} rows)")
    return out
