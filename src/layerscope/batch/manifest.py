"""The run folder: the run file, the manifest parts, the lock, and merging.

Layout of ``RUN_DIR``::

    run.json                      what was run (model, weights hash, method, options, versions, start/end)
    manifest/<shard>/part-NNNNNN.parquet     one committed chunk of manifest rows (atomic)
    manifest/<shard>/part-NNNNNN.sums.npz    that chunk's per-class map sums (written first)
    manifest/<shard>/status.json             a shard's counts and times, written when it finishes
    manifest.parquet              every row of every shard, sorted by key (written by the merge)
    maps/<shard>/part-NNNNNN.arrow           that chunk's maps (``--save maps``; written before its part)
    items/…                       per-item outputs (.npz, .gif, .html), named after the item's key
    thumbs/…                      report thumbnails
    summary/mean_maps.npz, summary/mean_maps.png, report.html

A chunk counts as done when its ``.parquet`` part exists: the part is written atomically
after every output file of its items, so a killed run leaves only whole parts, and a rerun
skips exactly the items they list. ``<shard>`` is ``all`` for an unsharded run, else
``shard-I-of-N``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from layerscope.atomic import atomic_file, write_bytes
from layerscope.errors import OutputError, UsageError

RUN_FILE = "run.json"
#: The run folder's lock file (see :class:`RunLock`); not a run's output, never removed.
LOCK_FILE = ".lock"
MANIFEST = "manifest.parquet"
#: What a run owns in its folder; ``overwrite`` removes exactly these.
OWNED = ("manifest", "maps", "items", "thumbs", "summary", RUN_FILE, MANIFEST, "report.html")
#: Statistics recorded per layer, as columns ``<layer>/<stat>``.
LAYER_STATS = ("peak", "peak_y", "peak_x", "entropy", "flat", "pointing")
_PART = re.compile(r"^part-(\d{6})\.parquet$")


def shard_tag(shard: tuple[int, int] | None) -> str:
    """The manifest sub-folder of a shard: ``all`` or ``shard-I-of-N``."""
    if shard is None or shard[1] == 1:
        return "all"
    return f"shard-{shard[0]}-of-{shard[1]}"


def parse_shard(value: Any) -> tuple[int, int] | None:
    """``"i/N"`` or ``(i, N)`` as ``(i, N)`` with ``0 <= i < N``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not m:
            raise UsageError(f"--shard must look like I/N (e.g. 0/4), not {value!r}")
        value = (int(m.group(1)), int(m.group(2)))
    try:
        i, n = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"shard must be (index, count) or 'I/N', not {value!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"shard {i}/{n}: the index must be 0 … {n - 1} and the count at least 1")
    return (i, n)


def schema(layers: Sequence[str]) -> Any:
    """The manifest's Arrow schema for a run over ``layers``."""
    import pyarrow as pa

    fields = [
        ("key", pa.string()),
        ("source", pa.string()),
        ("content_hash", pa.string()),
        ("shard", pa.int32()),
        ("status", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("predicted", pa.int32()),
        ("predicted_name", pa.string()),
        ("predicted_probability", pa.float32()),
        ("target", pa.int32()),
        ("target_name", pa.string()),
        ("target_probability", pa.float32()),
        ("target_score", pa.float32()),
        ("correct", pa.bool_()),
        ("outputs", pa.list_(pa.string())),
        ("maps_shard", pa.string()),
        ("maps_row", pa.int32()),
    ]
    kinds = {"flat": pa.bool_(), "pointing": pa.bool_()}
    for layer in layers:
        for stat in LAYER_STATS:
            fields.append((f"{layer}/{stat}", kinds.get(stat, pa.float32())))
    return pa.schema(fields)


def write_part(path: Path, rows: Sequence[Mapping[str, Any]], layers: Sequence[str]) -> None:
    """Write manifest rows as one Parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema(layers))
    with atomic_file(path, overwrite=True) as f:
        pq.write_table(table, f, compression="zstd")


def part_files(run_dir: Path, tag: str | None = None) -> list[Path]:
    """Committed manifest parts (of one shard tag, or of all), in order."""
    base = Path(run_dir) / "manifest"
    if not base.is_dir():
        return []
    dirs = [base / tag] if tag else sorted(p for p in base.iterdir() if p.is_dir())
    out = []
    for d in dirs:
        if d.is_dir():
            out.extend(sorted(p for p in d.iterdir() if _PART.match(p.name)))
    return out


def next_part_number(run_dir: Path, tag: str) -> int:
    """The number of the next part of shard ``tag``."""
    nums = [int(_PART.match(p.name).group(1)) for p in part_files(run_dir, tag)]  # type: ignore[union-attr]
    return max(nums, default=0) + 1


def done_keys(run_dir: Path, tag: str, retry_errors: bool = False) -> set[str]:
    """Keys of the items committed by shard ``tag``; with ``retry_errors``, only those that
    did not fail (an error row is done again)."""
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for p in part_files(run_dir, tag):
        try:
            t = pq.read_table(p, columns=["key", "status"])
        except Exception as e:
            raise OutputError(f"{p}: cannot read this manifest part ({e}); delete it to redo its items") from None
        for key, status in zip(t.column("key").to_pylist(), t.column("status").to_pylist(), strict=True):
            if not (retry_errors and str(status).startswith("error")):
                keys.add(key)
    return keys


def ok_hashes(run_dir: Path, tag: str) -> dict[str, str]:
    """Key → content hash of shard ``tag``'s committed items that did not fail."""
    import pyarrow.parquet as pq

    out: dict[str, str] = {}
    for p in part_files(run_dir, tag):
        t = pq.read_table(p, columns=["key", "status", "content_hash"]).to_pydict()
        for key, status, digest in zip(t["key"], t["status"], t["content_hash"], strict=True):
            if not str(status).startswith("error"):
                out[key] = digest
    return out


def drop_parts_with(run_dir: Path, tag: str, keys: set[str]) -> int:
    """Remove shard ``tag``'s parts that list any of ``keys`` (their ``.parquet`` first, then
    their summary sums), so every item they held is done again; returns the rows removed."""
    import pyarrow.parquet as pq

    n = 0
    for p in part_files(run_dir, tag):
        listed = pq.read_table(p, columns=["key"]).column("key").to_pylist()
        if keys.isdisjoint(listed):
            continue
        p.unlink()
        with contextlib.suppress(FileNotFoundError):
            p.with_name(p.name.replace(".parquet", ".sums.npz")).unlink()
        n += len(listed)
    return n


def drop_error_rows(run_dir: Path, tag: str) -> int:
    """Remove shard ``tag``'s error rows from its parts (each part replaced atomically; an
    error row adds nothing to the summary sums), so that their items are done again and no
    stale error stays. Returns how many rows were removed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n = 0
    for p in part_files(run_dir, tag):
        t = pq.read_table(p)
        failed = pc.starts_with(t.column("status"), "error")
        bad = int(pc.sum(failed).as_py() or 0)
        if not bad:
            continue
        kept = t.filter(pc.invert(failed))
        with atomic_file(p, overwrite=True) as f:
            pq.write_table(kept, f, compression="zstd")
        n += bad
    return n


def read_manifest(run_dir: str | os.PathLike[str]) -> Any:
    """Every committed row of a run as an Arrow table (the merged file when it is current)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = part_files(Path(run_dir))
    if not parts:
        raise UsageError(f"{run_dir}: holds no manifest parts (is it a layerscope batch run folder?)")
    tables = [pq.read_table(p) for p in parts]
    return pa.concat_tables(tables, promote_options="default")


# --------------------------------------------------------------------------- run file


def read_run_file(run_dir: Path) -> dict[str, Any] | None:
    """The run file's content, or ``None`` when there is none."""
    p = Path(run_dir) / RUN_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(f"{p}: cannot read the run file ({e}); pass --overwrite to start the run again") from None


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


def prepare_run_dir(
    run_dir: Path, fingerprint: Mapping[str, Any], meta: Mapping[str, Any], overwrite: bool, lock: RunLock | None = None
) -> None:
    """Create or reuse ``run_dir`` for the run ``fingerprint``.

    A folder holding another run (a different model, weights, method, options, source or
    outputs) is refused unless ``overwrite``, which removes that run's files (only those),
    and only when ``lock`` (held by the caller) shows no other process is in the folder.

    Raises:
        UsageError: the folder holds a different run, files that are not a run's, or is busy.
        OutputError: the folder cannot be created or written.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir}: exists and is not a folder; give a folder for the run")
    existing = read_run_file(run_dir) if run_dir.is_dir() else None
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    if existing is not None and existing.get("fingerprint") != fingerprint:
        if not overwrite:
            diff = _differences(existing.get("fingerprint") or {}, fingerprint)
            raise UsageError(
                f"{run_dir} holds a different run (its {', '.join(diff) or 'settings'} differ); "
                "pass --overwrite (overwrite=True) to replace it, or choose another folder"
            )
        if lock is not None:
            lock.exclusive()
        clear_run(run_dir)
        existing = None
    elif existing is None and run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        owned = [p for p in run_dir.iterdir() if p.name in OWNED]
        if not overwrite:
            raise UsageError(
                f"{run_dir}: the folder is not empty and holds no layerscope run; "
                "choose an empty or new folder, or pass --overwrite"
            )
        if lock is not None:
            lock.exclusive()
        for p in owned:
            _remove(p)
    if lock is not None:
        lock.shared()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{run_dir}: cannot create the run folder ({e.strerror or e})") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise OutputError(f"{run_dir}: the run folder is not writable")
    record = dict(meta)
    record["fingerprint"] = fingerprint
    if existing is not None:
        record["started"] = existing.get("started", record.get("started"))
        record["resumed"] = [*existing.get("resumed", []), meta.get("started")]
    write_json(run_dir / RUN_FILE, record)


def update_run_file(run_dir: Path, **changes: Any) -> None:
    """Change some fields of the run file (atomically)."""
    record = read_run_file(run_dir) or {}
    record.update(changes)
    write_json(Path(run_dir) / RUN_FILE, record)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (replacing)."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"), overwrite=True)


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote in ``run_dir`` (and nothing else)."""
    for name in OWNED:
        _remove(Path(run_dir) / name)


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    except OSError as e:
        raise OutputError(f"{p}: cannot remove the old run's file ({e.strerror or e})") from None


def remove_parts(run_dir: Path, tag: str, everywhere: bool) -> int:
    """Remove the temporary ``.NAME.*.part`` files a killed run left: those of shard ``tag``'s
    manifest and maps store, and with ``everywhere`` (no other shard can be writing) every one in the run
    folder. Returns how many were removed."""
    run_dir = Path(run_dir)
    roots = [run_dir] if everywhere else [run_dir / "manifest" / tag, run_dir / "maps" / tag]
    n = 0
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.rglob(".*.part*"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


class RunLock:
    """The lock of a whole run folder (``RUN_DIR/.lock``), held by every process of a run:
    shared while it runs (the shards of one run work side by side), exclusive for a moment
    to clear the folder. Taking it never waits: a folder another process is running in is
    refused whatever the flags, ``overwrite`` included.

    A POSIX record lock belongs to this process only (a forked worker does not hold it) and
    goes when the process dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise UsageError(f"{self.run_dir}: exists and is not a folder; give a folder for the run")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"{self.run_dir}: cannot create the run folder ({e.strerror or e})") from None
        self.shared()

    def _take(self, mode: int) -> None:
        try:
            fcntl.lockf(self.fd, mode | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise UsageError(
                f"{self.run_dir}: another layerscope batch is running in this folder; "
                "wait for it to end or choose another folder (--overwrite does not stop it)"
            ) from None

    def shared(self) -> None:
        """Hold the folder as one of its runs (refused while another process clears it)."""
        self._take(fcntl.LOCK_SH)

    def exclusive(self) -> None:
        """Hold the folder alone (refused while any other process holds it)."""
        self._take(fcntl.LOCK_EX)

    def close(self) -> None:
        """Release the lock."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def shard_lock(run_dir: Path, tag: str, wait: float = 2.0) -> Iterator[None]:
    """Hold the lock of one shard of a run: a second process on the same shard waits up to
    ``wait`` seconds, then is refused.

    A POSIX record lock belongs to this process only (a forked worker does not hold it) and
    goes when the process dies, so a killed run never leaves a stale lock.
    """
    d = Path(run_dir) / "manifest" / tag
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise UsageError(
                        f"{run_dir}: another layerscope batch is running in this folder ({tag}); "
                        "wait for it to end or choose another folder (--overwrite does not stop it)"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
