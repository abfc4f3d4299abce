"""An :class:`~layerscope.evaluate.tour.Evaluation` as a terminal table, a CSV or Parquet file
of metric × layer × method, and a plot of each metric against layer depth."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.atomic import atomic_file, atomic_path, check_writable
from layerscope.errors import UsageError
from layerscope.evaluate.tour import HIGHER_IS_BETTER, RANDOM, TITLES, TRAINED

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
        arrow = "→0" if metric == "randomisation_rank_corr" else ("↑" if HIGHER_IS_BETTER[metric] else "↓")
        lines.append(f"{TITLES[metric]} {arrow}  ({ev.count(metric)} image(s))")
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
    return "\n".join(lines).rstrip() + "\n"


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    return buf.getvalue().encode("utf-8")


def save(ev: Any, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``ev`` by extension: ``.csv`` / ``.parquet`` (one row per model, method, layer
    and metric: :data:`COLUMNS`), ``.png`` / ``.svg`` (:func:`plot`). Atomic."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in FORMATS:
        raise UsageError(f"cannot write {p.name!r}: the evaluation is written as {', '.join(FORMATS)}")
    check_writable(p, overwrite)
    if ext == ".csv":
        with atomic_file(p, overwrite) as f:
            f.write(_csv_bytes(ev.rows()))
    elif ext == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError("writing .parquet needs pyarrow (pip install pyarrow); .csv needs nothing") from None
        rows = ev.rows()
        table = pa.table({k: [r[k] for r in rows] for k in COLUMNS})
        with atomic_path(p, overwrite, suffix=".parquet") as tmp:
            pq.write_table(table, str(tmp))
    else:
        fig = plot(ev)  # a bare Figure (no pyplot state): nothing to close
        with atomic_file(p, overwrite) as f:
            fig.savefig(f, format=ext[1:], dpi=110, bbox_inches="tight", metadata=_metadata(ext))
    return p


def _metadata(ext: str) -> dict[str, Any]:
    # Reproducible files: no creation date in the SVG / PNG.
    return {"Date": None} if ext == ".svg" else {"Software": None}


def plot(ev: Any) -> Any:
    """A figure: one panel per metric, the metric against layer depth, one line per method;
    the random-model baseline of each method dashed in the same colour. Returns the
    matplotlib ``Figure`` (made without pyplot)."""
    from matplotlib.figure import Figure

    metrics = list(ev.metrics)
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows), layout="constrained")
    depth = np.arange(1, len(ev.layers) + 1)
    colours = [f"C{i % 10}" for i in range(len(ev.methods))]
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        for m, colour in zip(ev.methods, colours, strict=True):
            y = [ev.mean(metric, m, layer, TRAINED) for layer in ev.layers]
            ax.plot(depth, y, marker="o", ms=3, color=colour, label=m)
            yr = [ev.mean(metric, m, layer, RANDOM) for layer in ev.layers]
            if any(math.isfinite(v) for v in yr):
                ax.plot(depth, yr, ls="--", lw=1, color=colour, alpha=0.7)
        if metric == "randomisation_rank_corr":
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        arrow = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        if metric == "randomisation_rank_corr":
            arrow = "nearer 0 is better"
        ax.set_title(f"{TITLES[metric]} ({arrow}; {ev.count(metric)} images)", fontsize=9)
        ax.set_xticks(depth)
        ax.set_xticklabels(
            [layer.replace("block", "b").replace("_conv", "c") for layer in ev.layers], fontsize=6, rotation=90
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    if any(key[0] == RANDOM for key in ev.values):
        handles.append(Line2D([], [], color="grey", ls="--", lw=1))
        labels.append("random-model maps")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Faithfulness by layer depth", fontsize=10)
    return fig
