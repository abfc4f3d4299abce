"""Merging a run: every shard's manifest parts into ``manifest.parquet``, the per-class
mean maps and the index page."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.batch import fs, manifest
from layerscope.errors import UsageError


def now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def all_shards_finished(run_dir: Any, shard: tuple[int, int] | None) -> bool:
    """Whether every shard of the run has written its ``status.json``."""
    rd = fs.run_dir(run_dir)
    n = shard[1] if shard else 1
    tags = [manifest.shard_tag((i, n)) for i in range(n)]
    return all(rd.isfile(f"manifest/{t}/status.json") for t in tags)


def merge_run(run_dir: str | os.PathLike[str], report: bool | None = None) -> Path | str:
    """Merge a run's manifest parts (every shard) into ``manifest.parquet``, write the
    per-class mean maps (``summary/mean_maps.npz`` and ``.png``) and, with ``report`` (default:
    as the run was started), ``report.html``.

    ``run_dir`` may be a URI (:mod:`~layerscope.batch.fs`); every file is put whole.

    Raises:
        UsageError: not a run folder, or an item listed twice (parts of different runs mixed).
    """
    import pyarrow.compute as pc

    from layerscope.batch import stats
    from layerscope.batch.stats import SummarySums, grid_png

    run_dir = fs.run_dir(run_dir)
    record = manifest.read_run_file(run_dir)
    if record is None:
        raise UsageError(f"{run_dir}: holds no run.json (is it a layerscope batch run folder?)")
    table = manifest.read_manifest(run_dir)
    keys = table.column("key")
    if len(pc.unique(keys)) != len(keys):
        counts = pc.value_counts(keys)
        dup = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
        raise UsageError(f"{run_dir}: {_items(len(dup))} listed more than once (e.g. {dup[0]}); the parts mix runs")
    table = table.sort_by("key")
    run_dir.put(manifest.MANIFEST, manifest.parquet_bytes(table))

    layers = list(record.get("layers") or [])
    class_names = list(record.get("class_names") or [])
    sums = SummarySums()
    for part in manifest.part_files(run_dir):
        side = manifest.sums_name(part)
        with contextlib.suppress(FileNotFoundError):
            sums.merge(SummarySums.from_file(io.BytesIO(run_dir.read_bytes(side))))
    labels = table.column("label").to_pylist() + table.column("predicted").to_pylist()
    n_classes = stats.class_count(labels, class_names)
    means = sums.means(layers, n_classes)
    arrays = dict(means)
    arrays["layers"] = np.asarray(layers)
    arrays["class_names"] = np.asarray(class_names or [f"class {i}" for i in range(n_classes)])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    run_dir.put("summary/mean_maps.npz", buf.getvalue())
    colormap = ((record.get("fingerprint") or {}).get("render") or {}).get("colormap", "jet")
    names = class_names or [f"class {i}" for i in range(n_classes)]
    run_dir.put("summary/mean_maps.png", grid_png(means, layers, names, colormap))
    if report is None:
        report = bool(record.get("report"))
    if report:
        from layerscope.batch.report import write_report

        write_report(run_dir, table, record)
    shards = [t for t in run_dir.listdir("manifest") if run_dir.isfile(f"manifest/{t}/status.json")]
    manifest.update_run_file(run_dir, finished=now(), items=table.num_rows, shards_finished=len(shards))
    return run_dir.where(manifest.MANIFEST)


def _items(n: int) -> str:
    return "1 item is" if n == 1 else f"{n} items are"
