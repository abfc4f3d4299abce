"""CIFAR-10 from its published "python version" files, read without unsafe unpickling.

The dataset ships as ``cifar-10-python.tar.gz``: a folder ``cifar-10-batches-py`` holding
``data_batch_1`` … ``data_batch_5`` (training, 10 000 images each), ``test_batch`` and
``batches.meta``, each a Python 2 pickle of a dict of bytes, lists and one numpy array
(``data``: uint8 ``(N, 3072)``, the red, green and blue planes of each 32×32 image, row by
row). ``keras.datasets.cifar10.load_data()`` reads them with the unrestricted ``pickle``
module, which runs whatever code a tampered file names; here a restricted unpickler accepts
only the few numpy classes an array needs.

Where the files come from, in order: the path given (the ``.tar.gz`` or the extracted
folder); Keras' own cache (``~/.keras/datasets``, filled by ``load_data()``); layerscope's
cache; a download from the dataset's home page (SHA-256 checked) when online.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import InputImageError, UsageError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
FOLDER = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Largest pickle accepted (the real batches are about 31 MB each).
MAX_PICKLE_BYTES = 64 * 1024 * 1024


class DatasetError(InputImageError):
    """A dataset that is missing, unreadable, unsafe or not in the expected format."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        multiarray = _multiarray()
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,  # bytes pickled by Python 3 at protocol 2
        }
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} (only numpy arrays and plain data are allowed)"
            ) from None


def _multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2 (numpy.core is its deprecated alias)
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused text encoding {encoding!r}")
    return text.encode("latin1")


def safe_unpickle(data: bytes, source: str) -> Any:
    """Load a CIFAR-style pickle (Python 2 or 3) allowing only numpy arrays and plain data."""
    if len(data) > MAX_PICKLE_BYTES:
        raise DatasetError(f"{source}: {len(data):,} bytes is too large for a CIFAR-10 batch")
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DatasetError(f"{source}: refused to unpickle {e}") from None
    except Exception as e:  # truncated or corrupt data: many exception types
        raise DatasetError(f"{source}: not a readable CIFAR-10 pickle ({type(e).__name__}: {e})") from None


def _key(d: dict[Any, Any], name: str) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise KeyError(name)


def parse_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 32, 32, 3), labels int64 (N,))`` from one batch file's bytes."""
    d = safe_unpickle(data, source)
    try:
        if not isinstance(d, dict):
            raise TypeError(f"a {type(d).__name__}, not a dict")
        pixels = _key(d, "data")
        labels = np.asarray(_key(d, "labels"), dtype=np.int64).reshape(-1)
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise TypeError("'data' is not a uint8 (N, 3072) array")
        if pixels.shape[1] != 3 * 32 * 32 or pixels.shape[0] != labels.shape[0]:
            raise TypeError(f"'data' is {pixels.shape} for {labels.shape[0]} labels; expected (N, 3072)")
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise TypeError("labels outside 0..9")
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{source}: not a CIFAR-10 batch: {e}") from None
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def parse_meta(data: bytes, source: str) -> tuple[str, ...]:
    """The class names from ``batches.meta``."""
    d = safe_unpickle(data, source)
    try:
        names = _key(d, "label_names")
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"{source}: not a CIFAR-10 batches.meta file: {e}") from None


@dataclass
class Cifar10Source:
    """Reads the batch files of one copy of CIFAR-10: a folder or a ``.tar.gz``."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.is_dir():
            if (self.path / FOLDER).is_dir() and not (self.path / META_FILE).exists():
                self.path = self.path / FOLDER
        elif not self.path.is_file():
            raise DatasetError(f"{self.path}: no such file or folder (expected {TARBALL} or its {FOLDER} folder)")

    @contextlib.contextmanager
    def _tar(self) -> Iterator[tarfile.TarFile]:
        try:
            with tarfile.open(self.path, "r:*") as tf:
                yield tf
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(f"{self.path}: not a readable {TARBALL} ({e})") from None

    def read(self, name: str) -> bytes:
        """The bytes of one file of the set (``data_batch_1``, ``test_batch``, ``batches.meta``)."""
        if self.path.is_dir():
            p = self.path / name
            if not p.is_file():
                raise DatasetError(f"{self.path}: has no {name} (is it a {FOLDER} folder?)")
            if p.stat().st_size > MAX_PICKLE_BYTES:
                raise DatasetError(f"{p}: too large for a CIFAR-10 batch")
            return p.read_bytes()
        with self._tar() as tf:
            member = None
            for m in tf:  # members are read by name only: nothing is extracted
                if m.isfile() and m.name.rsplit("/", 1)[-1] == name:
                    member = m
                    break
            if member is None:
                raise DatasetError(f"{self.path}: has no {name} (is it {TARBALL}?)")
            if member.size > MAX_PICKLE_BYTES:
                raise DatasetError(f"{self.path}: {name} is too large for a CIFAR-10 batch")
            f = tf.extractfile(member)
            if f is None:
                raise DatasetError(f"{self.path}: cannot read {name}")
            try:
                return f.read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DatasetError(f"{self.path}: {name} is truncated or corrupt ({e})") from None

    def class_names(self) -> tuple[str, ...]:
        """The class names in ``batches.meta`` (the standard ten when it is missing)."""
        try:
            data = self.read(META_FILE)
        except DatasetError:
            return CLASSES
        return parse_meta(data, f"{self.path}/{META_FILE}")

    def batches(self, split: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The ``(images, labels)`` of each batch file of ``split``, in order."""
        for name in split_files(split):
            yield parse_batch(self.read(name), f"{self.path}/{name}")


def split_files(split: str) -> tuple[str, ...]:
    """The batch file names of ``"train"`` or ``"test"``."""
    if split == "train":
        return TRAIN_FILES
    if split == "test":
        return TEST_FILES
    raise UsageError(f"unknown CIFAR-10 split {split!r}; expected 'train' or 'test'")


def cache_dir() -> Path:
    """Where a downloaded copy is kept: ``$XDG_CACHE_HOME/layerscope`` (``~/.cache/layerscope``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "layerscope"


def cached_copies() -> list[Path]:
    """Existing local copies: Keras' cache (Keras 3 and 2 layouts), then layerscope's."""
    keras_home = Path(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"))
    candidates = [
        keras_home / "datasets" / "cifar-10-batches-py-target" / FOLDER,
        keras_home / "datasets" / FOLDER,
        cache_dir() / TARBALL,
    ]
    return [
        p for p in candidates if (p.is_dir() and (p / TEST_FILES[0]).is_file()) or (p.is_file() and p.suffix == ".gz")
    ]


def download(dst: Path | None = None, timeout: float = 30.0) -> Path:
    """Download ``cifar-10-python.tar.gz`` (170 MB) into the cache, SHA-256 checked, atomically
    (:func:`layerscope.atomic.atomic_file`: no partial file under the final name).

    Raises:
        DatasetError: offline (names the file to pass instead) or a checksum mismatch.
    """
    from layerscope.atomic import atomic_file
    from layerscope.errors import OutputError

    dst = dst or cache_dir() / TARBALL
    hint = f"pass --cifar10-path PATH (cifar10_path=...) to a local {TARBALL} or its extracted {FOLDER} folder"
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot write the CIFAR-10 cache in {dst.parent} ({e}); {hint}") from None
    try:
        response = urllib.request.urlopen(URL, timeout=timeout)
    except (TimeoutError, OSError) as e:
        raise DatasetError(f"CIFAR-10 is not cached and cannot be downloaded ({e}); {hint}") from None
    digest = hashlib.sha256()
    try:
        with response, atomic_file(dst, overwrite=True) as f:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except OSError as e:
                    raise DatasetError(f"the CIFAR-10 download failed ({e}); {hint}") from None
                if not chunk:
                    break
                digest.update(chunk)
                f.write(chunk)
            if digest.hexdigest() != SHA256:
                raise DatasetError(f"{URL}: the download's SHA-256 does not match; {hint}")
    except OutputError as e:
        raise DatasetError(f"cannot write the CIFAR-10 cache ({e}); {hint}") from None
    return dst


def open_cifar10(path: str | os.PathLike[str] | None = None, allow_download: bool = True) -> Cifar10Source:
    """A readable copy of CIFAR-10: ``path`` if given, else a cached copy, else a download."""
    if path is not None:
        return Cifar10Source(Path(path))
    found = cached_copies()
    if found:
        return Cifar10Source(found[0])
    if not allow_download:
        raise DatasetError(
            f"CIFAR-10 is not cached: pass --cifar10-path PATH (cifar10_path=...) to a local {TARBALL} "
            f"or its extracted {FOLDER} folder"
        )
    return Cifar10Source(download())


def load_image(
    index: int,
    split: str = "test",
    path: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
) -> tuple[np.ndarray, int, str]:
    """One CIFAR-10 image: ``(uint8 RGB (32, 32, 3), label, class name)``.

    Args:
        index: the image's position in the split (0-based; the training split runs through
            ``data_batch_1`` … ``data_batch_5`` in order).
        split: ``"test"`` (10 000 images) or ``"train"`` (50 000).
        path: a ``cifar-10-python.tar.gz`` or its extracted folder; default: a cached copy or
            a download.
        allow_download: whether a missing copy may be downloaded.
    """
    split_files(split)
    if index < 0:
        raise UsageError(f"CIFAR-10 image index must be 0 or more, not {index}")
    src = open_cifar10(path, allow_download)
    seen = 0
    for images, labels in src.batches(split):
        if index < seen + len(labels):
            i = index - seen
            names = src.class_names()
            label = int(labels[i])
            return images[i].copy(), label, names[label] if label < len(names) else f"class {label}"
        seen += len(labels)
    raise UsageError(f"CIFAR-10 image index {index} is out of range: the {split} split has {seen} images")


def load_split(
    split: str = "train",
    path: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    allow_download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a split (or the first ``limit``): uint8 ``(N, 32, 32, 3)``, ``(N,)``."""
    src = open_cifar10(path, allow_download)
    xs, ys, n = [], [], 0
    for images, labels in src.batches(split):
        xs.append(images)
        ys.append(labels)
        n += len(labels)
        if limit is not None and n >= limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit is not None else (x, y)
