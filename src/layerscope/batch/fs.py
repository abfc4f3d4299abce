"""Where a run's files and a source's bytes live: a local folder, or any fsspec URI
(``s3://bucket/run``, ``gs://…``, ``file://…``).

:func:`run_dir` gives a :class:`LocalDir` or a :class:`RemoteDir` with one small interface
(list, read, put, remove, a staged local file for writers that write by name), so the
manifest, the sink and the merge say *what* they write, once, and each kind of storage says
*how* it commits:

* a local folder writes a temporary ``.NAME.*.part`` file and renames it (:mod:`layerscope.atomic`);
* object storage never appends or renames in place: a finished object is uploaded in one
  ``PUT`` (a multipart upload is visible only when complete), so an object under a final
  name is always whole, and an item is done exactly when its manifest part object exists.

The lock of a remote run folder is a lease object (see :class:`Lease`). fsspec (and the
filesystem's package, ``s3fs``, ``gcsfs`` …) is imported only for a URI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from layerscope.atomic import write_bytes
from layerscope.errors import InputImageError, OutputError, UsageError

#: URI schemes that name the local file system.
LOCAL_SCHEMES = ("file", "local")
#: Seconds a remote lease lives without being renewed (``LAYERSCOPE_LOCK_TTL``).
LEASE_TTL = 120.0


def scheme(target: Any) -> str | None:
    """The URI scheme of ``target`` (``"s3"``), or ``None`` for a plain path."""
    if isinstance(target, RemoteDir):
        return target.uri.split("://", 1)[0]
    text = target if isinstance(target, str) else None
    if text is None or "://" not in text:
        return None
    head = text.split("://", 1)[0]
    return head.lower() if head.replace("+", "").replace("-", "").isalnum() else None


def is_remote(target: Any) -> bool:
    """Whether ``target`` is a URI of a filesystem other than the local one."""
    s = scheme(target)
    return s is not None and s not in LOCAL_SCHEMES


def local_path(target: str | os.PathLike[str]) -> str:
    """A local path from a path or a ``file://`` URI."""
    text = os.fspath(target)
    s = scheme(text)
    return text.split("://", 1)[1] if s in LOCAL_SCHEMES else text


_FS: dict[tuple[int, str], Any] = {}


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``uri`` and the path inside it (one instance per process,
    so a forked reader or writer never shares a connection with its parent).

    Raises:
        UsageError: fsspec or the scheme's package is not installed.
    """
    try:
        import fsspec
    except ImportError:
        raise UsageError(f'{uri}: reading URIs needs fsspec: pip install "layerscope[cloud]"') from None
    key = (os.getpid(), scheme(uri) or "")
    try:
        if key not in _FS:
            try:  # no listings cache: writer processes add objects this one must see
                _FS[key] = fsspec.filesystem(key[1], use_listings_cache=False)
            except TypeError:
                _FS[key] = fsspec.filesystem(key[1])
        fs = _FS[key]
        return fs, fs._strip_protocol(uri)
    except (ImportError, ValueError) as e:
        raise UsageError(f'{uri}: {e} (pip install "layerscope[cloud]" gives s3fs and gcsfs)') from None


def read_capped(fs: Any, path: str, name: str, max_bytes: int | None = None) -> bytes:
    """An object's bytes, its declared size checked against the image file cap
    (:func:`layerscope.inputs.check_image_size`) before a byte is read, and never more than
    the cap read (an object that grows while read is refused)."""
    from layerscope.inputs import check_image_size

    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise InputImageError(f"{name}: no such file") from None
    except OSError as e:
        raise InputImageError(f"{name}: cannot read the file ({e})") from None
    if info.get("type") not in ("file", None):
        raise InputImageError(f"{name}: is a {info.get('type')}, not an image file")
    cap = check_image_size(int(info.get("size") or 0), name, max_bytes)
    with fs.open(path, "rb") as f:
        data = f.read(cap + 1)
    check_image_size(len(data), name, max_bytes)
    return data


def run_dir(target: Any) -> LocalDir | RemoteDir:
    """The run folder ``target`` names: a :class:`LocalDir` for a path or ``file://`` URI,
    a :class:`RemoteDir` for any other URI (a :class:`LocalDir`/:class:`RemoteDir` is returned as is)."""
    if isinstance(target, (LocalDir, RemoteDir)):
        return target
    if is_remote(target):
        return RemoteDir(str(target))
    return LocalDir(Path(local_path(target)))


class LocalDir:
    """A run folder on the local disk: atomic renames, POSIX locks (see :mod:`~layerscope.batch.manifest`)."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalDir({str(self.root)!r})"

    @property
    def display(self) -> Path:
        """What a result or a message shows for the folder."""
        return self.root

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def where(self, rel: str) -> Path:
        """The path of ``rel`` (what a result shows)."""
        return self._p(rel)

    def isfile(self, rel: str) -> bool:
        return self._p(rel).is_file()

    def isdir(self, rel: str = "") -> bool:
        return self._p(rel).is_dir()

    def exists(self, rel: str = "") -> bool:
        return self._p(rel).exists()

    def listdir(self, rel: str = "") -> list[str]:
        """Names in folder ``rel`` (none when it does not exist), sorted."""
        d = self._p(rel)
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def read_bytes(self, rel: str) -> bytes:
        return self._p(rel).read_bytes()

    def put(self, rel: str, data: bytes) -> None:
        """Write ``data`` as ``rel``, atomically, replacing."""
        p = self._p(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(p, data, overwrite=True)

    @contextlib.contextmanager
    def staged(self, rel: str) -> Iterator[Path]:
        """A local path to write ``rel`` at by name (the writer writes it atomically)."""
        p = self._p(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        yield p

    def remove(self, rel: str) -> None:
        """Remove file or folder ``rel`` (nothing when missing)."""
        p = self._p(rel)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


class RemoteDir:
    """A run folder on an fsspec filesystem: every object is put whole, once finished.

    Picklable and fork-safe: it holds the URI and opens its filesystem in each process.
    """

    remote = True

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemoteDir({self.uri!r})"

    @property
    def display(self) -> str:
        return self.uri

    @property
    def fs(self) -> Any:
        return filesystem(self.uri)[0]

    def _p(self, rel: str) -> str:
        base = filesystem(self.uri)[1].rstrip("/")
        return f"{base}/{rel}" if rel else base

    def where(self, rel: str) -> str:
        """The URI of ``rel``."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def isfile(self, rel: str) -> bool:
        return bool(self.fs.isfile(self._p(rel)))

    def isdir(self, rel: str = "") -> bool:
        return bool(self.fs.isdir(self._p(rel)))

    def exists(self, rel: str = "") -> bool:
        return bool(self.fs.exists(self._p(rel)))

    def listdir(self, rel: str = "") -> list[str]:
        p = self._p(rel)
        try:
            names = self.fs.ls(p, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted({str(n).rstrip("/").rsplit("/", 1)[-1] for n in names if str(n).rstrip("/") != p})

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self._p(rel)))

    def put(self, rel: str, data: bytes) -> None:
        """Upload ``data`` as object ``rel`` in one put (replacing)."""
        try:
            self.fs.pipe_file(self._p(rel), data)
        except OSError as e:
            raise OutputError(f"{self.uri}/{rel}: cannot write the object ({e})") from None

    def create(self, rel: str, data: bytes) -> bool:
        """Put ``rel`` only if no object has that name (a conditional put, ``If-None-Match: *``
        on S3); ``False`` when one exists."""
        try:
            self.fs.pipe_file(self._p(rel), data, mode="create")
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError):  # no conditional put here: check, then put (racy)
            if self.exists(rel):
                return False
            self.put(rel, data)
        return True

    @contextlib.contextmanager
    def staged(self, rel: str) -> Iterator[Path]:
        """A local temporary path to write ``rel`` at; the finished file is uploaded in one
        put, then removed here. Nothing is uploaded when the writing fails."""
        tmp = tempfile.mkdtemp(prefix="layerscope-stage-")
        try:
            local = Path(tmp) / rel.rsplit("/", 1)[-1]
            yield local
            try:
                self.fs.put_file(str(local), self._p(rel))
            except OSError as e:
                raise OutputError(f"{self.uri}/{rel}: cannot upload the file ({e})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, rel: str) -> None:
        p = self._p(rel)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isdir(p):
                self.fs.rm(p, recursive=True)
            elif self.fs.exists(p):
                self.fs.rm_file(p)


class Lease:
    """A lock on object storage, where no lock dies with its process: the object ``rel``
    (``RUN_DIR/.lock/<shard>``), created with a conditional put, names its owner and an
    expiry that a thread renews every ``ttl / 4`` seconds while held; it is deleted on release.

    An object whose expiry has passed (a killed run's) is taken over. Limits, said plainly:
    where the filesystem has no conditional put, two runs starting in the same instant may
    both take it; the expiry uses each machine's clock (keep them in sync, or raise
    ``LAYERSCOPE_LOCK_TTL``); a killed run's folder stays refused until its lease expires.
    """

    def __init__(self, rd: RemoteDir, rel: str, ttl: float | None = None) -> None:
        self.rd, self.rel = rd, rel
        self.ttl = float(os.environ.get("LAYERSCOPE_LOCK_TTL") or LEASE_TTL) if ttl is None else ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.ttl}).encode()

    def holder(self) -> dict[str, Any] | None:
        """The live lease's record (``None`` when there is none, or it expired)."""
        return live_lease(self.rd, self.rel)

    def try_take(self) -> bool:
        """Take the lease now; ``False`` when another process holds a live one."""
        if self.rd.create(self.rel, self._record()):
            self._start()
            return True
        if self.holder() is not None:
            return False
        self.rd.remove(self.rel)  # expired: a killed run's
        if not self.rd.create(self.rel, self._record()):
            return False
        self._start()
        return True

    def _start(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.ttl / 4):
                with contextlib.suppress(Exception):
                    self.rd.put(self.rel, self._record())

        self._thread = threading.Thread(target=renew, name="layerscope-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease object."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        with contextlib.suppress(Exception):
            self.rd.remove(self.rel)


def live_lease(rd: RemoteDir, rel: str) -> dict[str, Any] | None:
    """The record of lease ``rel`` when it exists and has not expired."""
    try:
        record = json.loads(rd.read_bytes(rel))
    except (FileNotFoundError, ValueError):
        return None
    return record if float(record.get("expires", 0)) > time.time() else None
