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

``RUN_DIR`` may be a local folder or any fsspec URI (:mod:`~layerscope.batch.fs`): every
function here takes a path, a URI or a :func:`~layerscope.batch.fs.run_dir`, and names files
by their path relative to it. On object storage a part is one object put whole, and the lock
is a lease object per shard (``RUN_DIR/.lock/<shard>``; see :class:`RunLock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from layerscope.batch import fs
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

    detection = pa.struct([("box", pa.list_(pa.float32(), 4)), ("label", pa.int32()), ("score", pa.float32())])

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
        # a detector's detections (null for other models), in the model input's pixels
        ("detections", pa.list_(detection)),
        ("explained_box", pa.list_(pa.float32(), 4)),
        # who wrote the row and its files: host/pid:N (local engine), host/node:ID/actor:ID (Ray)
        ("writer", pa.string()),
    ]
    kinds = {"flat": pa.bool_(), "pointing": pa.bool_()}
    for layer in layers:
        for stat in LAYER_STATS:
            fields.append((f"{layer}/{stat}", kinds.get(stat, pa.float32())))
    return pa.schema(fields)


def detection_columns(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """A detector's per-image detections (:attr:`layerscope.Explanation.detections`) as the
    manifest's ``detections`` (``[{box, label, score}, …]``) and ``explained_box`` columns."""
    if record is None:
        return {"detections": None, "explained_box": None}
    rows = [
        {"box": [float(v) for v in box], "label": int(label), "score": float(score)}
        for box, label, score in zip(record["boxes"], record["labels"], record["scores"], strict=True)
    ]
    explained = record.get("explained")
    return {"detections": rows, "explained_box": None if not explained else [float(v) for v in explained["box"]]}


def parquet_bytes(table: Any) -> bytes:
    """An Arrow table as the bytes of a zstd-compressed Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue().to_pybytes()


def read_parquet(run_dir: Any, rel: str, columns: Sequence[str] | None = None) -> Any:
    """The Parquet file ``rel`` of a run folder as an Arrow table (a part is small: read whole;
    as one file, so that ``pyarrow.dataset``, which ``pq.read_table`` imports — 0.4 s cold —,
    is never loaded by a run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(fs.run_dir(run_dir).read_bytes(rel))).read(columns=columns)


def write_part(run_dir: Any, rel: str, rows: Sequence[Mapping[str, Any]], layers: Sequence[str]) -> None:
    """Write manifest rows as the Parquet file ``rel`` of the run folder, atomically (one put)."""
    import pyarrow as pa

    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema(layers))
    fs.run_dir(run_dir).put(rel, parquet_bytes(table))


def part_files(run_dir: Any, tag: str | None = None) -> list[str]:
    """Committed manifest parts (of one shard tag, or of all), in order, relative to the run folder."""
    rd = fs.run_dir(run_dir)
    tags = [tag] if tag else rd.listdir("manifest")
    out = []
    for t in tags:
        out.extend(f"manifest/{t}/{name}" for name in rd.listdir(f"manifest/{t}") if _PART.match(name))
    return out


def next_part_number(run_dir: Any, tag: str) -> int:
    """The number of the next part of shard ``tag``."""
    nums = [int(_PART.match(p.rsplit("/", 1)[1]).group(1)) for p in part_files(run_dir, tag)]  # type: ignore[union-attr]
    return max(nums, default=0) + 1


def done_keys(run_dir: Any, tag: str, retry_errors: bool = False) -> set[str]:
    """Keys of the items committed by shard ``tag``; with ``retry_errors``, only those that
    did not fail (an error row is done again)."""
    keys: set[str] = set()
    for p in part_files(run_dir, tag):
        try:
            t = read_parquet(run_dir, p, columns=["key", "status"])
        except Exception as e:
            where = fs.run_dir(run_dir).where(p)
            raise OutputError(f"{where}: cannot read this manifest part ({e}); delete it to redo its items") from None
        for key, status in zip(t.column("key").to_pylist(), t.column("status").to_pylist(), strict=True):
            if not (retry_errors and str(status).startswith("error")):
                keys.add(key)
    return keys


def ok_hashes(run_dir: Any, tag: str) -> dict[str, str]:
    """Key → content hash of shard ``tag``'s committed items that did not fail."""
    out: dict[str, str] = {}
    for p in part_files(run_dir, tag):
        t = read_parquet(run_dir, p, columns=["key", "status", "content_hash"]).to_pydict()
        for key, status, digest in zip(t["key"], t["status"], t["content_hash"], strict=True):
            if not str(status).startswith("error"):
                out[key] = digest
    return out


def sums_name(part: str) -> str:
    """The summary sums file beside manifest part ``part``."""
    return part.replace(".parquet", ".sums.npz")


def drop_parts_with(run_dir: Any, tag: str, keys: set[str]) -> int:
    """Remove shard ``tag``'s parts that list any of ``keys`` (their ``.parquet`` first, then
    their summary sums), so every item they held is done again; returns the rows removed."""
    rd = fs.run_dir(run_dir)
    n = 0
    for p in part_files(rd, tag):
        listed = read_parquet(rd, p, columns=["key"]).column("key").to_pylist()
        if keys.isdisjoint(listed):
            continue
        rd.remove(p)
        rd.remove(sums_name(p))
        n += len(listed)
    return n


def drop_error_rows(run_dir: Any, tag: str) -> int:
    """Remove shard ``tag``'s error rows from its parts (each part replaced atomically; an
    error row adds nothing to the summary sums), so that their items are done again and no
    stale error stays. Returns how many rows were removed."""
    import pyarrow.compute as pc

    rd = fs.run_dir(run_dir)
    n = 0
    for p in part_files(rd, tag):
        t = read_parquet(rd, p)
        failed = pc.starts_with(t.column("status"), "error")
        bad = int(pc.sum(failed).as_py() or 0)
        if not bad:
            continue
        rd.put(p, parquet_bytes(t.filter(pc.invert(failed))))
        n += bad
    return n


def read_manifest(run_dir: str | os.PathLike[str]) -> Any:
    """Every committed row of a run as an Arrow table (the merged file when it is current)."""
    import pyarrow as pa

    parts = part_files(run_dir)
    if not parts:
        raise UsageError(f"{run_dir}: holds no manifest parts (is it a layerscope batch run folder?)")
    tables = [read_parquet(run_dir, p) for p in parts]
    return pa.concat_tables(tables, promote_options="default")


# --------------------------------------------------------------------------- run file


def read_run_file(run_dir: Any) -> dict[str, Any] | None:
    """The run file's content, or ``None`` when there is none."""
    rd = fs.run_dir(run_dir)
    if not rd.isfile(RUN_FILE):
        return None
    try:
        return json.loads(rd.read_bytes(RUN_FILE).decode("utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(
            f"{rd.where(RUN_FILE)}: cannot read the run file ({e}); pass --overwrite to start the run again"
        ) from None


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


def prepare_run_dir(
    run_dir: Any, fingerprint: Mapping[str, Any], meta: Mapping[str, Any], overwrite: bool, lock: RunLock | None = None
) -> None:
    """Create or reuse ``run_dir`` for the run ``fingerprint``.

    A folder holding another run (a different model, weights, method, options, source or
    outputs) is refused unless ``overwrite``, which removes that run's files (only those),
    and only when ``lock`` (held by the caller) shows no other process is in the folder.

    Raises:
        UsageError: the folder holds a different run, files that are not a run's, or is busy.
        OutputError: the folder cannot be created or written.
    """
    rd = fs.run_dir(run_dir)
    if not rd.remote and rd.root.exists() and not rd.root.is_dir():
        raise UsageError(f"{rd}: exists and is not a folder; give a folder for the run")
    names = rd.listdir()
    existing = read_run_file(rd) if RUN_FILE in names else None
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    if existing is not None and existing.get("fingerprint") != fingerprint:
        if not overwrite:
            diff = _differences(existing.get("fingerprint") or {}, fingerprint)
            raise UsageError(
                f"{rd} holds a different run (its {', '.join(diff) or 'settings'} differ); "
                "pass --overwrite (overwrite=True) to replace it, or choose another folder"
            )
        if lock is not None:
            lock.exclusive()
        clear_run(rd)
        existing = None
    elif existing is None and any(n != LOCK_FILE for n in names):
        if not overwrite:
            raise UsageError(
                f"{rd}: the folder is not empty and holds no layerscope run; "
                "choose an empty or new folder, or pass --overwrite"
            )
        if lock is not None:
            lock.exclusive()
        clear_run(rd)
    if lock is not None:
        lock.shared()
    if not rd.remote:
        try:
            rd.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{rd}: cannot create the run folder ({e.strerror or e})") from None
        if not os.access(rd.root, os.W_OK | os.X_OK):
            raise OutputError(f"{rd}: the run folder is not writable")
    record = dict(meta)
    record["fingerprint"] = fingerprint
    if existing is not None:
        record["started"] = existing.get("started", record.get("started"))
        record["resumed"] = [*existing.get("resumed", []), meta.get("started")]
    write_json(rd, RUN_FILE, record)


def update_run_file(run_dir: Any, **changes: Any) -> None:
    """Change some fields of the run file (atomically)."""
    record = read_run_file(run_dir) or {}
    record.update(changes)
    write_json(run_dir, RUN_FILE, record)


def write_json(run_dir: Any, rel: str, data: Any) -> None:
    """Write JSON as ``rel`` of the run folder, atomically (replacing)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    fs.run_dir(run_dir).put(rel, text.encode("utf-8"))


def clear_run(run_dir: Any) -> None:
    """Remove what a run wrote in ``run_dir`` (and nothing else)."""
    rd = fs.run_dir(run_dir)
    for name in OWNED:
        try:
            rd.remove(name)
        except OSError as e:
            raise OutputError(f"{rd.where(name)}: cannot remove the old run's file ({e.strerror or e})") from None


def remove_parts(run_dir: Any, tag: str, everywhere: bool) -> int:
    """Remove the temporary ``.NAME.*.part`` files a killed run left: those of shard ``tag``'s
    manifest and maps store, and with ``everywhere`` (no other shard can be writing) every one
    in the run folder. Returns how many were removed (none on object storage, where nothing is
    written in place)."""
    rd = fs.run_dir(run_dir)
    if rd.remote:
        return 0
    roots = [rd.root] if everywhere else [rd.root / "manifest" / tag, rd.root / "maps" / tag]
    n = 0
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.rglob(".*.part*"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


_BUSY = "another layerscope batch is running in this folder"


class RunLock:
    """The lock of a whole run folder (``RUN_DIR/.lock``), held by every process of a run:
    shared while it runs (the shards of one run work side by side), exclusive for a moment
    to clear the folder. Taking it never waits: a folder another process is running in is
    refused whatever the flags, ``overwrite`` included.

    A POSIX record lock belongs to this process only (a forked worker does not hold it) and
    goes when the process dies, so a killed run never leaves a stale lock.

    On object storage, which has no lock that dies with its process, each shard's process
    holds a lease object ``RUN_DIR/.lock/<shard>`` (:func:`shard_lock`,
    :class:`~layerscope.batch.fs.Lease`); shared is then free, and exclusive is refused while
    any shard's lease is live.
    """

    def __init__(self, run_dir: Any) -> None:
        self.rd = fs.run_dir(run_dir)
        self.run_dir = self.rd.display
        self.fd: int | None = None
        if self.rd.remote:
            return
        root = self.rd.root
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root}: exists and is not a folder; give a folder for the run")
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"{root}: cannot create the run folder ({e.strerror or e})") from None
        self.shared()

    def _take(self, mode: int) -> None:
        if self.rd.remote:
            live = [r for t in self.rd.listdir(LOCK_FILE) if (r := fs.live_lease(self.rd, f"{LOCK_FILE}/{t}"))]
            if mode == fcntl.LOCK_EX and live:
                raise UsageError(
                    f"{self.run_dir}: {_BUSY} ({live[0].get('owner')}); wait for it to end or choose another "
                    "folder (--overwrite does not stop it)"
                )
            return
        try:
            fcntl.lockf(self.fd, mode | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise UsageError(
                f"{self.run_dir}: {_BUSY}; wait for it to end or choose another folder (--overwrite does not stop it)"
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
def shard_lock(run_dir: Any, tag: str, wait: float = 2.0) -> Iterator[None]:
    """Hold the lock of one shard of a run: a second process on the same shard waits up to
    ``wait`` seconds, then is refused.

    A POSIX record lock belongs to this process only (a forked worker does not hold it) and
    goes when the process dies, so a killed run never leaves a stale lock. On object
    storage it is the lease object ``RUN_DIR/.lock/<shard>`` (see :class:`RunLock`).
    """
    rd = fs.run_dir(run_dir)
    if rd.remote:
        lease = fs.Lease(rd, f"{LOCK_FILE}/{tag}")
        deadline = time.monotonic() + wait
        while not lease.try_take():
            if time.monotonic() > deadline:
                holder = (lease.holder() or {}).get("owner", "another process")
                raise UsageError(
                    f"{rd}: {_BUSY} ({tag}, {holder}); wait for it to end (a killed run's lease expires after "
                    f"{lease.ttl:.0f} s) or choose another folder (--overwrite does not stop it)"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            lease.release()
        return
    d = rd.root / "manifest" / tag
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
                        f"{run_dir}: {_BUSY} ({tag}); wait for it to end or choose another folder "
                        "(--overwrite does not stop it)"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
