"""Merging a run: every shard's manifest parts into ``manifest.parquet``, the per-class
mean maps and the index page."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np

from layerscope.batch import manifest
from layerscope.errors import UsageError


def now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def all_shards_finished(run_dir: Path, shard: tuple[int, int] | None) -> bool:
    """Whether every shard of the run has written its ``status.json``."""
    n = shard[1] if shard else 1
    tags = [manifest.shard_tag((i, n)) for i in range(n)]
    return all((run_dir / "manifest" / t / "status.json").is_file() for t in tags)


def merge_run(run_dir: str | os.PathLike[str], report: bool | None = None) -> Path:
    """Merge a run's manifest parts (every shard) into ``manifest.parquet``, write the
    per-class mean maps (``summary/mean_maps.npz`` and ``.png``) and, with ``report`` (default:
    as the run was started), ``report.html``.

    Raises:
        UsageError: not a run folder, or an item listed twice (parts of different runs mixed).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from layerscope.atomic import atomic_file, write_bytes
    from layerscope.batch import stats
    from layerscope.batch.stats import SummarySums, grid_png

    run_dir = Path(run_dir)
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
    out = run_dir / manifest.MANIFEST
    with atomic_file(out, overwrite=True) as f:
        pq.write_table(table, f, compression="zstd")

    layers = list(record.get("layers") or [])
    class_names = list(record.get("class_names") or [])
    sums = SummarySums()
    for part in manifest.part_files(run_dir):
        side = part.with_name(part.name.replace(".parquet", ".sums.npz"))
        if side.is_file():
            sums.merge(SummarySums.from_file(str(side)))
    labels = table.column("label").to_pylist() + table.column("predicted").to_pylist()
    n_classes = stats.class_count(labels, class_names)
    means = sums.means(layers, n_classes)
    summary = run_dir / "summary"
    summary.mkdir(exist_ok=True)
    arrays = dict(means)
    arrays["layers"] = np.asarray(layers)
    arrays["class_names"] = np.asarray(class_names or [f"class {i}" for i in range(n_classes)])
    with atomic_file(summary / "mean_maps.npz", overwrite=True) as f:
        np.savez_compressed(f, **arrays)
    colormap = ((record.get("fingerprint") or {}).get("render") or {}).get("colormap", "jet")
    names = class_names or [f"class {i}" for i in range(n_classes)]
    write_bytes(summary / "mean_maps.png", grid_png(means, layers, names, colormap), overwrite=True)
    if report is None:
        report = bool(record.get("report"))
    if report:
        from layerscope.batch.report import write_report

        write_report(run_dir, table, record)
    shards = sorted((run_dir / "manifest").glob("*/status.json"))
    manifest.update_run_file(run_dir, finished=now(), items=table.num_rows, shards_finished=len(shards))
    return out


def _items(n: int) -> str:
    return "1 item is" if n == 1 else f"{n} items are"
