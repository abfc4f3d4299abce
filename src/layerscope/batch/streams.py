"""Sources at scale, each streamed, never loaded whole: Parquet / Arrow tables of image
bytes or paths, Hugging Face datasets saved with ``save_to_disk``, image files on any fsspec
filesystem (``s3://bucket/photos/``), and WebDataset tar shards (:mod:`~layerscope.batch.shards`).

:func:`open_stream` recognises them; :meth:`~layerscope.batch.config.SourceSpec.open` asks it
first, then :func:`~layerscope.batch.sources.open_source`. Every item's bytes go through the
same checks as a file's (size cap before reading, then the safe decode of
:func:`layerscope.inputs.load_image`), and a corrupt item is that item's error row.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Callable
from typing import Any

from layerscope.batch import fs
from layerscope.batch.sources import Item, Loaded, Source
from layerscope.errors import InputImageError, UsageError, unknown_name
from layerscope.inputs import is_image_name

#: Rows decoded from a table at a time by a reader (its memory: one batch of image cells).
TABLE_BATCH_ROWS = 64
TABLE_SUFFIXES = (".parquet", ".pq", ".arrow", ".feather", ".ipc")


def _unique(keys: list[str], where: str) -> None:
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise UsageError(f"{where}: the id {dup!r} is listed more than once; every item must be unique")


def _cell_bytes(cell: Any, base: str, name: str) -> bytes:
    """The image bytes of a table cell: bytes, a ``{"bytes", "path"}`` struct (Hugging Face's
    image feature), or a path (relative to the table's folder, or a URI), read with its cap."""
    if isinstance(cell, dict):
        cell = cell.get("bytes") or cell.get("path")
    if cell is None:
        raise InputImageError(f"{name}: no image in this row")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if not isinstance(cell, str):
        raise InputImageError(f"{name}: the image cell holds a {type(cell).__name__}, not bytes or a path")
    path = cell if fs.is_remote(cell) or os.path.isabs(cell) else f"{base}/{cell}"
    if fs.is_remote(path):
        f, p = fs.filesystem(path)
        return fs.read_capped(f, p, path)
    from layerscope.inputs import check_image_file

    check_image_file(path)
    with open(path, "rb") as fh:
        return fh.read()


def _decoded(item: Item, data: bytes, name: str, label: Any, keep: Callable[[str], bool] | None) -> Loaded:
    from layerscope.inputs import load_image

    digest = hashlib.sha256(data).hexdigest()
    label = None if label is None else int(label)
    if keep is not None and not keep(digest):
        return Loaded(item, digest, label=label, skipped=True)
    try:
        return Loaded(item, digest, rgb=load_image(data, name=name), label=label)
    except InputImageError as e:
        return Loaded(item, digest, label=label, error=str(e).splitlines()[0])


class TableSource(Source):
    """The rows of a Parquet or Arrow IPC (Feather v2) table, local or a URI: an image column
    of bytes, of ``{"bytes", "path"}`` structs, or of paths; optional id and label columns.

    Read by row group (a record batch for Arrow), :data:`TABLE_BATCH_ROWS` rows at a time;
    each reader process keeps one open file and its position, so a run reads every row group
    about once per reader.
    """

    def __init__(self, path: str, image_column: str = "image", id_column: str | None = None, label_column=None):
        self.path, self.image_column, self.id_column, self.label_column = path, image_column, id_column, label_column
        self.name = os.path.basename(path.rstrip("/"))
        self.base = path.rsplit("/", 1)[0] if "/" in path else "."
        self._state: dict[str, Any] | None = None
        schema, counts = self._meta()
        for col in (image_column, id_column, label_column):
            if col is not None and col not in schema.names:
                raise UsageError(unknown_name(f"column of {path}", col, list(schema.names)))
        self.starts = [0]
        for n in counts:
            self.starts.append(self.starts[-1] + n)
        if self.starts[-1] == 0:
            raise UsageError(f"{path}: the table has no rows")
        class_names = None
        self._label_index: dict[str, int] | None = None
        if label_column is not None:
            import pyarrow.types as pat

            if pat.is_string(schema.field(label_column).type) or pat.is_large_string(schema.field(label_column).type):
                names = sorted({v for v in self._column(label_column) if v is not None})
                self._label_index = {n: i for i, n in enumerate(names)}
                class_names = tuple(names)
        if id_column is not None:
            self.keys = [str(v) for v in self._column(id_column)]
            _unique(self.keys, path)
        else:
            self.keys = [f"{self.name}/{i:08d}" for i in range(self.starts[-1])]
        super().__init__(
            description={
                "kind": "table",
                "path": path if fs.is_remote(path) else os.path.abspath(path),
                "rows": self.starts[-1],
                "image_column": image_column,
                "id_column": id_column,
                "label_column": label_column,
            },
            class_names=class_names,
        )
        self._state = None  # opened again in each reader process

    # -------------------------------------------------------------- the file
    def _open(self) -> dict[str, Any]:
        st = self._state
        if st is not None and st["pid"] == os.getpid():
            return st
        import pyarrow as pa
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        if fs.is_remote(self.path):
            f, p = fs.filesystem(self.path)
            handle: Any = f.open(p, "rb")
        else:
            handle = pa.memory_map(fs.local_path(self.path)) if not self._is_parquet() else fs.local_path(self.path)
        try:
            if self._is_parquet():
                reader: Any = pq.ParquetFile(handle)
            else:
                reader = ipc.open_file(handle)
        except (pa.ArrowInvalid, OSError) as e:
            raise UsageError(
                f"{self.path}: not a readable {'Parquet' if self._is_parquet() else 'Arrow'} table ({e})"
            ) from None
        self._state = {"pid": os.getpid(), "reader": reader, "group": -1, "start": 0, "batch": None, "it": None}
        return self._state

    def _is_parquet(self) -> bool:
        return self.path.lower().endswith((".parquet", ".pq"))

    def _meta(self) -> tuple[Any, list[int]]:
        r = self._open()["reader"]
        if self._is_parquet():
            md = r.metadata
            return r.schema_arrow, [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        return r.schema, [r.get_batch(i).num_rows for i in range(r.num_record_batches)]

    def _batches(self, group: int, columns: list[str]) -> Any:
        import pyarrow as pa

        r = self._open()["reader"]
        if self._is_parquet():
            return r.iter_batches(batch_size=TABLE_BATCH_ROWS, row_groups=[group], columns=columns)
        batch = r.get_batch(group).select(columns)  # memory-mapped: nothing read until used
        return iter(pa.Table.from_batches([batch]).to_batches(max_chunksize=TABLE_BATCH_ROWS))

    def _column(self, name: str) -> list[Any]:
        out: list[Any] = []
        for g in range(len(self.starts) - 1):
            for b in self._batches(g, [name]):
                out.extend(b.column(0).to_pylist())
        return out

    def _row(self, index: int) -> dict[str, Any]:
        """Row ``index``, from the batch this process holds, or read on from its row group."""
        st = self._open()
        g = bisect.bisect_right(self.starts, index) - 1
        offset = index - self.starts[g]
        cols = [c for c in (self.image_column, self.label_column) if c is not None]
        if st["group"] != g or st["batch"] is None or offset < st["start"]:
            st.update(group=g, start=0, it=self._batches(g, cols))
            st["batch"] = next(st["it"])
        while offset >= st["start"] + st["batch"].num_rows:
            st["start"] += st["batch"].num_rows
            st["batch"] = next(st["it"])
        return st["batch"].slice(offset - st["start"], 1).to_pylist()[0]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_state"] = None
        return state

    # -------------------------------------------------------------- Source
    def items(self) -> list[Item]:
        return [Item(k, i, "table") for i, k in enumerate(self.keys)]

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        row = self._row(int(item.ref))
        name = f"{self.path}[{item.ref}]"
        label = row.get(self.label_column) if self.label_column else None
        if self._label_index is not None and label is not None:
            label = self._label_index[label]
        return _decoded(item, _cell_bytes(row[self.image_column], self.base, name), name, label, keep)


class HFSource(Source):
    """A Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (memory-mapped Arrow:
    nothing is loaded whole). An image column of the ``Image`` feature is read as its stored
    bytes (``decode=False``) and decoded by layerscope's checked decoder, not by the dataset."""

    def __init__(self, path: str, image_column: str = "image", id_column=None, label_column=None, split=None):
        self.path, self.split = os.path.abspath(path), split
        self.image_column, self.id_column, self.label_column = image_column, id_column, label_column
        self._ds: tuple[int, Any] | None = None
        ds = self._dataset()
        for col in (image_column, id_column, label_column):
            if col is not None and col not in ds.column_names:
                raise UsageError(unknown_name(f"column of {path}", col, list(ds.column_names)))
        names = getattr(ds.features.get(label_column), "names", None) if label_column else None
        n = len(ds)
        stem = os.path.basename(self.path.rstrip("/"))
        self.keys = [str(v) for v in ds[id_column]] if id_column else [f"{stem}/{i:08d}" for i in range(n)]
        _unique(self.keys, path)
        super().__init__(
            description={"kind": "hf", "path": self.path, "split": split, "rows": n, "image_column": image_column,
                         "id_column": id_column, "label_column": label_column},
            class_names=tuple(names) if names else None,
        )  # fmt: skip
        self._ds = None

    def _dataset(self) -> Any:
        if self._ds is not None and self._ds[0] == os.getpid():
            return self._ds[1]
        try:
            import datasets
        except ImportError:
            raise UsageError(f'{self.path}: a saved Hugging Face dataset needs: pip install "layerscope[hf]"') from None
        ds = datasets.load_from_disk(self.path)
        if isinstance(ds, datasets.DatasetDict):
            if self.split not in ds:
                raise UsageError(unknown_name(f"split of {self.path}", str(self.split), list(ds)))
            ds = ds[self.split]
        if isinstance(ds.features.get(self.image_column), datasets.Image):
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        self._ds = (os.getpid(), ds)
        return ds

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    def items(self) -> list[Item]:
        return [Item(k, i, "hf") for i, k in enumerate(self.keys)]

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        row = self._dataset()[int(item.ref)]
        name = f"{self.path}[{item.ref}]"
        label = row.get(self.label_column) if self.label_column else None
        return _decoded(item, _cell_bytes(row[self.image_column], self.path, name), name, label, keep)


class RemoteFiles(Source):
    """Image files on an fsspec filesystem: a folder (recursive), a glob pattern, or one file;
    keyed by their path relative to the folder (the URI for a glob)."""

    def __init__(self, uri: str) -> None:
        f, p = fs.filesystem(uri)
        head = uri.split("://", 1)[0] + "://"
        if any(c in p for c in "*?["):
            found, base = sorted(f.glob(p)), None
        elif f.isdir(p):
            found, base = sorted(f.find(p)), p.rstrip("/") + "/"
        else:
            found, base = [p], None
        files = [q for q in found if is_image_name(q)]
        if not files:
            raise UsageError(f"{uri}: holds no image files")
        self.uris = [head + q for q in files]
        self.keys = [q[len(base) :] if base else head + q for q in files]
        super().__init__(description={"kind": "url", "uri": uri, "files": len(files)})
        self.other_files = len(found) - len(files)

    def items(self) -> list[Item]:
        return [Item(k, u, "url") for k, u in zip(self.keys, self.uris, strict=True)]

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        f, p = fs.filesystem(item.ref)
        return _decoded(item, fs.read_capped(f, p, item.ref), item.ref, None, keep)


def _is_hf(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, n)) for n in ("state.json", "dataset_dict.json")
    )


def open_stream(
    source: Any,
    *,
    image_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
) -> Source | None:
    """The streamed source ``source`` names, or ``None`` when it is none of them (a local
    folder, glob, list file or image: :func:`~layerscope.batch.sources.open_source`).

    * ``*.parquet`` / ``*.arrow`` / ``*.feather``: a :class:`TableSource`;
    * ``*.tar``, brace patterns included (``shards-{000000..000099}.tar``): a
      :class:`~layerscope.batch.shards.TarSource`;
    * a folder saved by ``datasets``' ``save_to_disk``: an :class:`HFSource` (``split`` picks
      a split of a ``DatasetDict``);
    * any other URI (``s3://bucket/photos/``, a glob, one object): :class:`RemoteFiles`.
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    columns = {"id_column": id_column, "label_column": label_column}
    plain = text.split("?", 1)[0].lower()
    if plain.endswith(TABLE_SUFFIXES):
        return TableSource(text, image_column or "image", **columns)
    if plain.endswith(".tar"):
        from layerscope.batch.shards import TarSource

        return TarSource(text)
    if not fs.is_remote(text) and _is_hf(fs.local_path(text)):
        return HFSource(fs.local_path(text), image_column or "image", split=split, **columns)
    if image_column or id_column or label_column:
        raise UsageError(f"{text}: --image-column, --id-column and --label-column are for tables and datasets")
    if fs.is_remote(text):
        return RemoteFiles(text)
    return None
