"""A plot of each metric column against layer depth, one line per method."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from layerscope.evaluate._registry import RANDOM, TRAINED, column


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
        col = column(metric)
        if col.direction == "zero":
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        n = ev.count(metric)
        ax.set_title(f"{col.title} ({col.wording}; {n} image{'' if n == 1 else 's'})", fontsize=9)
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
