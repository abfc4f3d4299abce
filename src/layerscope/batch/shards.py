"""WebDataset tar shards as a source: ``shards-{000000..000099}.tar``, local or on any
fsspec filesystem, read member by member, never extracted.

Listing reads the shards' headers only (a seekable file skips over each member's data);
reading an item seeks to its image member and reads exactly its declared size, checked
against the image file cap (:func:`layerscope.inputs.check_image_size`) first. Members are
grouped by WebDataset key (the member's path up to the first dot of its file name):
``key.jpg`` / ``key.png`` … is the image, an optional ``key.cls`` the true label.

A hostile member is refused before a byte of it is read and recorded as that member's error
row: a name that leaves the archive (absolute, ``..``), a symbolic or hard link, a device or
FIFO, a member larger than the cap.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from layerscope.batch import fs
from layerscope.batch.sources import Item, Loaded, Source
from layerscope.errors import InputImageError, UsageError
from layerscope.inputs import IMAGE_EXTENSIONS, check_image_size

#: Most names a brace pattern may expand to.
MAX_EXPANSION = 1_000_000
#: Largest ``.cls`` member read, in bytes.
MAX_CLS_BYTES = 64
_IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` → ``a-000.tar a-001.tar a-002.tar``; ``{x,y}`` → each; nested
    and several groups expand left to right (as the ``braceexpand`` package does)."""
    out: list[str] = []
    stack = [pattern]
    while stack:
        text = stack.pop()
        m = re.search(r"\{([^{}]*)\}", text)
        if m is None:
            out.append(text)
        else:
            body = m.group(1)
            r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
            if r:
                lo, hi = r.group(1), r.group(2)
                width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
                step = 1 if int(hi) >= int(lo) else -1
                options = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
            else:
                options = body.split(",")
            stack.extend(text[: m.start()] + o + text[m.end() :] for o in reversed(options))
        if len(out) + len(stack) > MAX_EXPANSION:
            raise UsageError(f"{pattern}: expands to more than {MAX_EXPANSION:,} names")
    return out


@dataclass
class _Entry:
    """One sample of a shard: where its image (and label) members lie, or why it is refused."""

    shard: int
    key: str
    image: tuple[int, int, str] | None = None  # offset, size, member name
    cls: tuple[int, int] | None = None
    problem: str | None = None


def _open(path: str) -> Any:
    if fs.is_remote(path):
        f, p = fs.filesystem(path)
        return f.open(p, "rb")
    return open(fs.local_path(path), "rb")


def _refusal(m: tarfile.TarInfo, where: str) -> str | None:
    """Why member ``m`` may not be read (before a byte of it is), or ``None``."""
    parts = PurePosixPath(m.name).parts
    if m.name.startswith("/") or ".." in parts or not parts:
        return f"{where}: refused: the member name {m.name!r} leaves the archive"
    if m.issym() or m.islnk():
        return f"{where}: refused: {m.name!r} is a link (to {m.linkname!r}), not a file"
    if not m.isreg():
        return f"{where}: refused: {m.name!r} is not a regular file (a device, FIFO or other special member)"
    return None


class TarSource(Source):
    """The samples of WebDataset tar shards (see the module)."""

    def __init__(self, pattern: str) -> None:
        shards = expand_braces(pattern)
        super().__init__(description={"kind": "webdataset", "pattern": pattern, "label_column": "cls"})
        self.shards = shards
        self.entries: list[_Entry] = []
        for i, shard in enumerate(shards):
            self._list(i, shard)
        if not self.entries:
            raise UsageError(f"{pattern}: the shards hold no samples")
        self._handle: tuple[int, int, Any] | None = None  # (pid, shard, open file)

    def _list(self, index: int, shard: str) -> None:
        stem = os.path.basename(shard.rstrip("/"))
        stem = stem[: -len(".tar")] if stem.endswith(".tar") else stem
        by_key: dict[str, _Entry] = {}
        before = len(self.entries)
        try:
            with _open(shard) as f, tarfile.open(fileobj=f, mode="r:") as tf:
                while True:
                    try:
                        m = tf.next()
                    except tarfile.ReadError:
                        if not by_key and len(self.entries) == before:
                            raise
                        break  # the shard ends inside its last member: read, that member's row says so
                    if m is None:
                        break
                    if m.isdir():
                        continue
                    where = f"{shard}:{m.name}"
                    problem = _refusal(m, where)
                    if problem is not None:
                        self.entries.append(_Entry(index, f"{stem}/{m.name}#{len(self.entries)}", problem=problem))
                        continue
                    folder, _, name = m.name.rpartition("/")
                    base, dot, ext = name.partition(".")
                    if not dot:
                        continue
                    key = f"{stem}/{folder + '/' if folder else ''}{base}"
                    e = by_key.get(key)
                    if e is None:
                        e = by_key[key] = _Entry(index, key)
                        self.entries.append(e)
                    ext = ext.lower()
                    if ext in _IMAGE_EXTS and e.image is None:
                        try:
                            check_image_size(m.size, where)
                        except InputImageError as err:
                            e.problem = f"refused before reading: {err}"
                        e.image = (m.offset_data, m.size, m.name)
                    elif ext == "cls":
                        e.cls = (m.offset_data, m.size)
        except FileNotFoundError:
            raise UsageError(f"{shard}: no such shard") from None
        except (tarfile.TarError, OSError) as e:
            raise UsageError(f"{shard}: not a readable uncompressed tar shard ({e})") from None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # an open file stays in its process
        return state

    def items(self) -> list[Item]:
        return [Item(e.key, i, "tar") for i, e in enumerate(self.entries)]

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        h = self._handle
        if h is None or h[0] != os.getpid() or h[1] != shard:
            if h is not None and h[0] == os.getpid():
                h[2].close()
            h = self._handle = (os.getpid(), shard, _open(self.shards[shard]))
        h[2].seek(offset)
        data = h[2].read(size)
        if len(data) != size:
            raise InputImageError(f"{self.shards[shard]}: the shard ends inside a member (truncated?)")
        return data

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        from layerscope.inputs import load_image

        e = self.entries[item.ref]
        if e.problem is not None:
            raise InputImageError(e.problem)
        if e.image is None:
            raise InputImageError(f"{self.shards[e.shard]}:{e.key}: the sample has no image member")
        offset, size, name = e.image
        where = f"{self.shards[e.shard]}:{name}"
        check_image_size(size, where)
        data = self._read(e.shard, offset, size)
        digest = hashlib.sha256(data).hexdigest()
        label = None
        if e.cls is not None:
            text = self._read(e.shard, e.cls[0], min(e.cls[1], MAX_CLS_BYTES)).decode("utf-8", "replace").strip()
            if not re.fullmatch(r"\d+", text):
                return Loaded(item, digest, error=f"{where}: the .cls member is not a class index ({text[:20]!r})")
            label = int(text)
        if keep is not None and not keep(digest):
            return Loaded(item, digest, label=label, skipped=True)
        try:
            return Loaded(item, digest, rgb=load_image(data, name=where), label=label)
        except InputImageError as err:
            return Loaded(item, digest, label=label, error=str(err).splitlines()[0])
