"""The one atomic write helper of the package: every file layerscope writes (outputs,
downloads, weights, training results, dataset runs) goes through :func:`atomic_file` or
:func:`atomic_path`.

The data goes to a temporary ``.NAME.*.part`` file beside the target, is flushed to disk, and
is renamed over the target only when complete, so an error, an interrupt or a full disk
never leaves a half-written file under the final name. An existing file is refused unless
``overwrite`` is set. Temporary files left by a killed run (``.NAME.*.part`` older than a
minute) are removed by the next write to the same name. Every ``OSError`` becomes an
:class:`~layerscope.errors.OutputError` naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from layerscope.errors import OutputError

#: A ``.part`` file older than this (seconds) belongs to a run that died.
STALE_PART_AGE = 60.0


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early, before any work, if ``path`` exists (without overwrite), is a folder, or its
    folder cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory; give a file name such as {p / 'grad_cam.gif'}")
    if p.exists() and not overwrite:
        raise OutputError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{parent}: the output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: the output folder is not writable")
    return p


def _describe(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EFBIG:
        return "the file is too large for the file system"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return e.strerror or str(e)


def remove_stale_parts(p: Path, max_age: float = STALE_PART_AGE) -> list[Path]:
    """Delete ``.NAME.*.part*`` files beside ``p`` older than ``max_age`` seconds (left by a
    killed run); returns what was removed."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for q in p.parent.glob(f".{p.name}.*.part*"):
            with contextlib.suppress(OSError):
                if now - q.stat().st_mtime > max_age:
                    q.unlink()
                    removed.append(q)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for a library that writes by file name; on success it
    replaces ``path``. ``suffix`` is appended to the temporary name (some writers want the
    real extension, e.g. Keras' ``.weights.h5``)."""
    p = check_writable(path, overwrite)
    parent = p.parent if str(p.parent) else Path(".")
    remove_stale_parts(p)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part" + suffix, dir=parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{parent}: cannot write there: {_describe(e)}") from None
    try:
        try:
            yield Path(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if p.exists() and not overwrite:  # appeared while we worked
                raise OutputError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
            os.replace(tmp, p)
            os.chmod(p, 0o666 & ~_umask())
        except OSError as e:
            raise OutputError(f"{p}: cannot write the file: {_describe(e)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], overwrite: bool = False, suffix: str = "") -> Iterator[IO[bytes]]:
    """An open binary file beside ``path``; on success it replaces ``path`` (see the module)."""
    with atomic_path(path, overwrite, suffix) as tmp:
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
        except OSError as e:
            raise OutputError(f"{path}: cannot write the file: {_describe(e)}") from None


def write_with(path: str | os.PathLike[str], fn: Callable[[IO[bytes]], None], overwrite: bool = False) -> Path:
    """Atomically write whatever ``fn(file)`` writes."""
    with atomic_file(path, overwrite) as f:
        fn(f)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes, overwrite: bool = False) -> Path:
    """Atomically write ``data``."""
    return write_with(path, lambda f: f.write(data), overwrite)


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK
