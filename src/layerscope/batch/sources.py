"""Where a dataset run's items come from, and how one item is read.

A source lists its items cheaply (paths, indices), in a deterministic order; reading an
item (decoding a file, slicing CIFAR-10, drawing a shapes sample) happens later, in a worker
process, and gives the RGB pixels, a SHA-256 content hash, and the true label and object
mask where the source knows them. The content hash decides an item's shard, so a shard
split does not depend on the listing order or on the machine.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from layerscope.errors import InputImageError, UsageError
from layerscope.inputs import IMAGE_EXTENSIONS, check_image_file, image_files, is_image_name


@dataclass(frozen=True)
class Item:
    """One item of a source: a unique ``key`` and what is needed to read it.

    Attributes:
        key: unique within the run; the manifest's primary key and the base of output names.
        ref: the file path (``kind="file"``) or the index in the source (``"cifar10"``, ``"shapes"``).
        kind: ``"file"``, ``"cifar10"`` or ``"shapes"``.
    """

    key: str
    ref: Any
    kind: str = "file"


@dataclass
class Loaded:
    """What reading an item gives: pixels and what is known about them, or an error."""

    item: Item
    content_hash: str
    rgb: np.ndarray | None = None
    label: int | None = None
    mask: np.ndarray | None = None
    error: str | None = None
    #: not read because its content hash puts it in another shard
    skipped: bool = False


def pixel_hash(rgb: np.ndarray) -> str:
    """SHA-256 of an RGB array's shape and bytes (for items that are not files)."""
    h = hashlib.sha256(str(tuple(rgb.shape)).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def shard_of(content_hash: str, count: int) -> int:
    """The shard (``0 … count-1``) an item belongs to, from its content hash."""
    return int(content_hash[:16], 16) % count


@dataclass
class Source:
    """A list of items and the way to read them; subclasses fill :meth:`items` and :meth:`read`."""

    description: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    #: files the listing skipped because they are not images (counted in the run's summary)
    other_files: int = 0
    #: subfolders the listing could not read (reported)
    unreadable: list[str] = field(default_factory=list)

    def items(self) -> list[Item]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:  # pragma: no cover
        """Read one item; a source that knows the content hash before decoding skips the
        decoding when ``keep(hash)`` is false."""
        raise NotImplementedError

    def load(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        """:meth:`read`, with any exception (a layerscope error, an unreadable file, whatever a
        decoder raises on a malformed item) turned into that item's error result."""
        try:
            return self.read(item, keep)
        except Exception as e:
            from layerscope.errors import LayerscopeError

            message = str(e).splitlines()[0] if str(e) else ""
            if not isinstance(e, (LayerscopeError, OSError)):
                message = f"cannot read the item ({type(e).__name__}{': ' + message if message else ''})"
            return Loaded(item, _fallback_hash(item), error=message or type(e).__name__)


def _fallback_hash(item: Item) -> str:
    """The content hash of an item that could not be read: its file's bytes if any, else its key."""
    if item.kind == "file":
        try:
            check_image_file(item.ref)
            return file_hash(item.ref)
        except (OSError, InputImageError):
            pass
    return hashlib.sha256(f"key:{item.key}".encode()).hexdigest()


def file_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (memory does not grow with the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileSource(Source):
    """Image files: a folder (recursive), a glob pattern, a text file of paths, or a list."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], keys: Sequence[str], description: dict[str, Any]):
        super().__init__(description=description)
        self._paths = [os.fspath(p) for p in paths]
        self._keys = list(keys)
        if len(set(self._keys)) != len(self._keys):
            seen: set[str] = set()
            dup = next(k for k in self._keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise UsageError(f"{dup} is listed more than once in the source; every item must be unique")

    def items(self) -> list[Item]:
        return [Item(k, p, "file") for k, p in zip(self._keys, self._paths, strict=True)]

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        from layerscope.inputs import load_image

        path = item.ref
        check_image_file(path)  # regular, readable, under the size cap: before a byte is read
        try:
            digest = file_hash(path)
        except PermissionError:
            raise InputImageError(f"{path}: permission denied") from None
        except OSError as e:
            raise InputImageError(f"{path}: cannot read the file ({e.strerror or e})") from None
        if keep is not None and not keep(digest):
            return Loaded(item, digest, skipped=True)
        try:
            rgb = load_image(path)
        except InputImageError as e:
            return Loaded(item, digest, error=str(e).splitlines()[0])
        return Loaded(item, digest, rgb=rgb)


class Cifar10Source(Source):
    """A split of CIFAR-10 (or a file in its format); the true labels are known."""

    def __init__(self, split: str = "test", path: str | os.PathLike[str] | None = None, limit: int | None = None):
        from layerscope.datasets import cifar10

        cifar10.split_files(split)
        src = cifar10.open_cifar10(path)
        images, labels = cifar10.load_split(split, path=src.path, limit=limit)
        super().__init__(
            description={"kind": "cifar10", "split": split, "path": str(Path(src.path).resolve()), "limit": limit},
            class_names=tuple(src.class_names()),
        )
        self.images, self.labels = images, labels
        self.split = split

    def items(self) -> list[Item]:
        return [Item(f"cifar10-{self.split}/{i:05d}", i, "cifar10") for i in range(len(self.labels))]

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        rgb = np.ascontiguousarray(self.images[item.ref])
        return Loaded(item, pixel_hash(rgb), rgb=rgb, label=int(self.labels[item.ref]))


class ShapesSource(Source):
    """``count`` samples of the synthetic shapes dataset: true labels and object masks known."""

    def __init__(self, count: int, seed: int = 1, size: int = 96, start: int = 0):
        from layerscope.datasets.shapes import CLASS_NAMES

        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise UsageError(f"the number of shapes samples must be a positive whole number, not {count!r}")
        super().__init__(
            description={"kind": "shapes", "count": count, "seed": seed, "size": size, "start": start},
            class_names=tuple(CLASS_NAMES),
        )
        self.count, self.seed, self.size, self.start = count, seed, size, start

    def items(self) -> list[Item]:
        return [Item(f"shapes-{self.seed}/{i:06d}", i, "shapes") for i in range(self.start, self.start + self.count)]

    def read(self, item: Item, keep: Callable[[str], bool] | None = None) -> Loaded:
        from layerscope.datasets.shapes import make_sample

        rgb, label, mask = make_sample(self.seed, item.ref, self.size)
        return Loaded(item, pixel_hash(rgb), rgb=rgb, label=int(label), mask=mask)


def _is_image(p: Path) -> bool:
    return is_image_name(p)


def from_folder(folder: str | os.PathLike[str]) -> FileSource:
    """Every image file under ``folder`` (recursive, by :func:`layerscope.inputs.image_files`'s
    rule), keyed by relative path; non-image files are counted, unreadable subfolders kept."""
    root = Path(folder)
    found = image_files(root, recursive=True)
    if not found.files:
        extra = f" ({found.others} other files)" if found.others else ""
        raise UsageError(f"{root}: holds no image files ({', '.join(IMAGE_EXTENSIONS)}){extra}")
    keys = [p.relative_to(root).as_posix() for p in found.files]
    src = FileSource(found.files, keys, {"kind": "folder", "path": str(root.resolve())})
    src.other_files = found.others
    src.unreadable = [str(p) for p in found.unreadable]
    return src


def _through_loop(path: str) -> bool:
    """Whether ``path`` goes through a directory symlink loop (a folder it is already in)."""
    seen: set[str] = set()
    parts = Path(path).parts[:-1]
    for i in range(1, len(parts) + 1):
        real = os.path.realpath(os.path.join(*parts[:i]))
        if real in seen:
            return True
        seen.add(real)
    return False


def from_glob(pattern: str) -> FileSource:
    """The files a glob pattern matches (``**`` recursive), keyed by the path as matched;
    paths that go round a directory symlink loop are dropped, as a folder source does."""
    matches = sorted(p for p in globlib.glob(pattern, recursive=True) if not _through_loop(p))
    files = [p for p in matches if os.path.isfile(p)]
    if not files:
        raise UsageError(f"{pattern}: the pattern matches no file")
    src = FileSource(
        files, [PurePosixPath(Path(p).as_posix()).as_posix() for p in files], {"kind": "glob", "pattern": pattern}
    )
    return src


def from_list_file(path: str | os.PathLike[str]) -> FileSource:
    """The paths listed in a text file, one a line (blank lines and ``#`` comments skipped);
    relative paths are relative to the list file's folder."""
    lst = Path(path)
    try:
        lines = lst.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{lst}: cannot read the list of paths ({e})") from None
    names = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not names:
        raise UsageError(f"{lst}: lists no paths")
    base = lst.parent
    files = [Path(n) if Path(n).is_absolute() else base / n for n in names]
    return FileSource(files, names, {"kind": "list", "path": str(lst.resolve()), "sha256": _sha(lst)})


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def open_source(
    source: Any = None,
    *,
    cifar10: bool = False,
    split: str = "test",
    cifar10_path: str | os.PathLike[str] | None = None,
    shapes: int | None = None,
    shapes_seed: int = 1,
    limit: int | None = None,
) -> Source:
    """The source a run reads.

    Args:
        source: a folder, a glob pattern (``*``, ``?``, ``[``), a ``.txt``/``.lst`` file of paths,
            a list of paths, or a :class:`Source`; ``None`` with ``cifar10`` or ``shapes``.
        cifar10: read CIFAR-10's ``split`` (from ``cifar10_path``, a cached copy or a download).
        shapes: read this many samples of the synthetic shapes dataset (seed ``shapes_seed``).
        limit: only the first ``limit`` items (CIFAR-10 and shapes).
    """
    chosen = sum(x for x in (source is not None, bool(cifar10), shapes is not None))
    if chosen != 1:
        raise UsageError("give exactly one source: a folder, a glob, a list file, --cifar10 or --shapes N")
    if isinstance(source, Source):
        return source
    if cifar10:
        return Cifar10Source(split, cifar10_path, limit)
    if shapes is not None:
        return ShapesSource(shapes if limit is None else min(shapes, limit), seed=shapes_seed)
    if isinstance(source, (list, tuple)):
        files = [os.fspath(p) for p in source]
        if not files:
            raise UsageError("the list of paths is empty")
        return FileSource(
            files, files, {"kind": "paths", "sha256": hashlib.sha256("\n".join(files).encode()).hexdigest()}
        )
    text = os.fspath(source)
    p = Path(text)
    if p.is_dir():
        return from_folder(p)
    if p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
        return from_list_file(p)
    if p.is_file() and _is_image(p):
        return FileSource([p], [p.name], {"kind": "paths", "path": str(p.resolve())})
    if any(c in text for c in "*?["):
        return from_glob(text)
    raise UsageError(f"{text}: not a folder, a glob pattern, an image or a .txt list of paths")
