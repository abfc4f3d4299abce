"""An :class:`~layerscope.evaluate.result.Evaluation` as a terminal table, a CSV or Parquet
file of metric × layer × method, and a plot (:mod:`layerscope.evaluate.plot`); several files
written as one set, all or none (:func:`save_all`)."""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from layerscope.atomic import atomic_path, check_writable
from layerscope.errors import UsageError
from layerscope.evaluate._registry import RANDOM, TRAINED, column

#: The columns of the CSV/Parquet rows.
COLUMNS = ("model", "method", "layer", "depth", "metric", "value", "sem", "n")
#: What :func:`save` writes, by extension.
FORMATS = (".csv", ".parquet", ".png", ".svg")


def _fmt(v: float, digits: int) -> str:
    return "—" if not math.isfinite(v) else f"{v:.{digits}f}"


def format_table(ev: Any, model: str = TRAINED, digits: int = 3) -> str:
    """One block per metric: a row per layer, a column per method (the random-model baseline,
    where measured, in brackets); ``↑``/``↓`` says which way is better; the best cell of each
    metric is starred."""
    lines = []
    w = max([len(layer) for layer in ev.layers] + [5])
    for metric in ev.metrics:
        col = column(metric)
        n = ev.count(metric)
        lines.append(f"{col.title} {col.arrow}  ({n} image{'' if n == 1 else 's'})")
        try:
            best = ev.best(metric, model)[:2]
        except UsageError:
            best = None
        has_random = any((RANDOM, m, ev.layers[0], metric) in ev.values for m in ev.methods)
        cw = max([len(m) for m in ev.methods] + [digits + 3]) + (digits + 6 if has_random else 0) + 1
        lines.append(f"  {'layer':{w}s}  " + "  ".join(f"{m:>{cw}s}" for m in ev.methods))
        for layer in ev.layers:
            cells = []
            for m in ev.methods:
                cell = _fmt(ev.mean(metric, m, layer, model), digits)
                if has_random:
                    cell += f" ({_fmt(ev.mean(metric, m, layer, RANDOM), digits)})"
                cell += "*" if best == (m, layer) else " "
                cells.append(f"{cell:>{cw}s}")
            lines.append(f"  {layer:{w}s}  " + "  ".join(cells))
        lines.append("")
    if any((RANDOM, m, ev.layers[0], mt) in ev.values for m in ev.methods for mt in ev.metrics):
        lines.append("(in brackets: the same maps made by the fully randomised model; * the best)")
        lines.append("")
    lines.extend(format_best_layers(ev, model, w))
    return "\n".join(lines).rstrip() + "\n"


def format_best_layers(ev: Any, model: str = TRAINED, width: int = 5) -> list[str]:
    """The "best layer" count table: per method, how many images each layer scores best on
    (:meth:`~layerscope.evaluate.result.Evaluation.best_layers`); no lines when unknown."""
    name, counts = ev.best_layers(model=model)
    if not counts:
        return []
    col = column(name)
    methods = list(counts)
    n = sum(counts[methods[0]].values())
    cw = max([len(m) for m in methods] + [5])
    lines = [f"Best layer per image by {col.title} {col.arrow}  ({n} image{'' if n == 1 else 's'})"]
    lines.append(f"  {'layer':{width}s}  " + "  ".join(f"{m:>{cw}s}" for m in methods))
    for layer in ev.layers:
        lines.append(f"  {layer:{width}s}  " + "  ".join(f"{counts[m][layer]:>{cw}d}" for m in methods))
    lines.append("")
    return lines


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    return buf.getvalue().encode("utf-8")


def _check(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"cannot write {p.name!r}: the evaluation is written as {', '.join(FORMATS)}")
    return p


def write_to(ev: Any, ext: str, target: Path) -> None:
    """Write ``ev`` as ``ext`` (one of :data:`FORMATS`) to ``target`` as it is (not atomic:
    :func:`save` and :func:`save_all` give it a temporary path)."""
    if ext == ".csv":
        target.write_bytes(csv_bytes(ev.rows()))
    elif ext == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError("writing .parquet needs pyarrow (pip install pyarrow); .csv needs nothing") from None
        rows = ev.rows()
        pq.write_table(pa.table({k: [r[k] for r in rows] for k in COLUMNS}), str(target))
    else:
        from layerscope.evaluate.plot import plot

        fig = plot(ev)  # a bare Figure (no pyplot state): nothing to close
        with open(target, "wb") as f:
            fig.savefig(f, format=ext[1:], dpi=110, bbox_inches="tight", metadata=_metadata(ext))


def save(ev: Any, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``ev`` by extension: ``.csv`` / ``.parquet`` (one row per model, method, layer
    and metric: :data:`COLUMNS`), ``.png`` / ``.svg`` (:func:`layerscope.evaluate.plot.plot`).
    Atomic."""
    p = _check(path)
    check_writable(p, overwrite)
    with atomic_path(p, overwrite, suffix=p.suffix.lower()) as tmp:
        write_to(ev, p.suffix.lower(), tmp)
    return p


def save_all(
    ev: Any,
    paths: Sequence[str | Path],
    overwrite: bool = False,
    writers: dict[Path, Callable[[Path], None]] | None = None,
) -> list[Path]:
    """Write several files as one set: all of them or none.

    Each file is written to a temporary file beside it; only when every one is written are
    they renamed to their names. A failure (a full disk, a writer's error, an interrupt)
    removes every temporary and leaves no file of the set under its name.

    Args:
        ev: the evaluation.
        paths: the files, each with an extension of :data:`FORMATS` or a key of ``writers``.
        overwrite: replace existing files.
        writers: ``{path: write(temporary path)}`` for files of other kinds (the explorer page).

    Returns:
        The paths written.
    """
    writers = dict(writers or {})
    ps = [Path(p) for p in paths]
    for p in ps:
        if p not in writers:
            _check(p)
        check_writable(p, overwrite)
    with contextlib.ExitStack() as stack:
        for p in ps:
            tmp = stack.enter_context(atomic_path(p, overwrite, suffix=p.suffix.lower()))
            if p in writers:
                writers[p](tmp)
            else:
                write_to(ev, p.suffix.lower(), tmp)
    # Leaving the stack renamed every temporary to its name; an error removed them all.
    return ps


def _metadata(ext: str) -> dict[str, Any]:
    # Reproducible files: no creation date in the SVG / PNG.
    return {"Date": None} if ext == ".svg" else {"Software": None}
