"""The result of an evaluation: :class:`Evaluation`, the per-image values of every metric
column, layer, method and model, with its means, best cell, rows, table and files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.evaluate import report
from layerscope.evaluate._registry import TRAINED, column, column_names, metric_of


@dataclass
class Plan:
    """What an evaluation will cost, announced before it starts.

    Attributes:
        images, layers, methods: the sizes of the run.
        passes: forward passes per part (``capture`` counts a forward + backward pass).
    """

    images: int
    layers: int
    methods: int
    passes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.passes.values())

    def describe(self) -> str:
        """One line: the total and its parts."""
        parts = ", ".join(f"{k} {v:,}" for k, v in self.passes.items() if v)
        return (
            f"{self.total:,} forward passes for {_count(self.images, 'image')} × {_count(self.layers, 'layer')} × "
            f"{_count(self.methods, 'method')} ({parts})"
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


@dataclass
class Evaluation:
    """The per-image values of every metric, layer, method and model.

    Attributes:
        layers: layer names in forward order (depth = position).
        methods: the CAM methods.
        metrics: the metric columns computed (each metric's ``columns``).
        values: ``{(model, method, layer, column): float64 (N,)}`` per-image values;
            ``model`` is ``"trained"`` or ``"random"`` (maps of the fully randomised model,
            scored on the trained one).
        cascade: ``{method: sanity.Randomisation}`` when the full cascade was run.
        images: number of images.
        plan: the announced cost.
        summary: ``{key: (mean, sem, n)}`` for an evaluation read back from its rows.
    """

    layers: list[str]
    methods: list[str]
    metrics: list[str]
    values: dict[tuple[str, str, str, str], np.ndarray]
    cascade: dict[str, Any] = field(default_factory=dict)
    images: int = 0
    plan: Plan | None = None
    summary: dict[tuple[str, str, str, str], tuple[float, float, int]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> Evaluation:
        """An evaluation from its :meth:`rows` (e.g. read back from a CSV, or several runs'
        rows together): means, standard errors and counts, no per-image values."""
        layers: dict[str, int] = {}
        methods: dict[str, None] = {}
        metrics: dict[str, None] = {}
        summary = {}
        for r in rows:
            layers[str(r["layer"])] = int(r["depth"])
            methods[str(r["method"])] = None
            metrics[str(r["metric"])] = None
            key = (str(r["model"]), str(r["method"]), str(r["layer"]), str(r["metric"]))
            summary[key] = (float(r["value"]), float(r["sem"]), int(r["n"]))
        order = column_names()
        return cls(
            sorted(layers, key=layers.__getitem__),
            list(methods),
            sorted(metrics, key=lambda m: order.index(m) if m in order else len(order)),
            {k: np.asarray([v[0]]) for k, v in summary.items()},
            images=max((v[2] for v in summary.values()), default=0),
            summary=summary,
        )

    def mean(self, metric: str, method: str, layer: str, model: str = TRAINED) -> float:
        """The mean over images of one column (NaN ignored; NaN where nothing was measured)."""
        v = self.values.get((model, method, layer, metric))
        if v is None or not np.isfinite(v).any():
            return math.nan
        return float(np.nanmean(v))

    def count(self, metric: str) -> int:
        """Images measured for the column ``metric`` (the most over its cells)."""
        counts = [v[2] for k, v in self.summary.items() if k[3] == metric]
        counts += [
            int(np.isfinite(v).sum()) for k, v in self.values.items() if k[3] == metric and k not in self.summary
        ]
        return max(counts, default=0)

    def rows(self) -> list[dict[str, Any]]:
        """One record per model, method, layer and metric column: mean, standard error, count."""
        out = []
        for key, v in self.values.items():
            model, method, layer, metric = key
            if key in self.summary:
                value, sem, count = self.summary[key]
            else:
                ok = v[np.isfinite(v)]
                value = float(ok.mean()) if len(ok) else math.nan
                sem = float(ok.std(ddof=1) / math.sqrt(len(ok))) if len(ok) > 1 else math.nan
                count = len(ok)
            out.append(
                {
                    "model": model,
                    "method": method,
                    "layer": layer,
                    "depth": self.layers.index(layer) + 1,
                    "metric": metric,
                    "value": value,
                    "sem": sem,
                    "n": count,
                }
            )
        return out

    def best(self, metric: str | None = None, model: str = TRAINED) -> tuple[str, str, float]:
        """``(method, layer, value)`` with the best mean.

        Args:
            metric: a metric as ``metrics=`` takes it (``"deletion"``: its headline column,
                e.g. ``road_combined`` for ``"road"``) or a column (``"deletion_auc"``);
                default: the first metric measured. Best is the highest, the lowest or
                (for the rank correlation with the random model) the nearest 0, as the
                column's direction says.
            model: ``"trained"`` or ``"random"``.
        """
        if metric is None:
            if not self.metrics:
                raise UsageError("nothing was measured")
            name = metric_of(self.metrics[0]).headline_column
        else:
            m = metric_of(metric)
            name = metric if metric in {c.name for c in m.columns} else m.headline_column
        col = column(name)
        cands = []
        for m in self.methods:
            for layer in self.layers:
                v = self.mean(name, m, layer, model)
                if np.isfinite(v):
                    cands.append((col.key(v), m, layer, v))
        if not cands:
            raise UsageError(f"metric {name!r} was not measured (measured: {', '.join(self.metrics) or 'nothing'})")
        _, m, layer, v = max(cands, key=lambda c: c[0])
        return m, layer, v

    def best_layers(self, metric: str | None = None, model: str = TRAINED) -> tuple[str, dict[str, dict[str, int]]]:
        """Which layer wins how often: per method, ``{layer: images it scores best on}``.

        Args:
            metric: a metric or a column, as :meth:`best` takes it; default ROAD if it was
                measured, else the first measured metric that re-runs the model
                (:func:`~layerscope.evaluate.rank.rank_metrics`).
            model: ``"trained"`` or ``"random"``.

        Returns:
            ``(column, {method: {layer: count}})``, every layer in forward order; an empty
            dict when no such metric was measured or only means are known (read back from rows).
        """
        from layerscope.evaluate.rank import DEFAULT_RANK_METRIC, best_layer_counts, best_positions, rank_metrics

        measured = [c for c in self.metrics if metric_of(c).name in rank_metrics()]
        if metric is None:
            heads = [metric_of(c).headline_column for c in measured]
            name = next((h for h in heads if metric_of(h).name == DEFAULT_RANK_METRIC), heads[0] if heads else None)
        else:
            m = metric_of(metric)
            name = metric if metric in {c.name for c in m.columns} else m.headline_column
        if name is None or self.summary:
            return name or "", {}
        out: dict[str, dict[str, int]] = {}
        for method in self.methods:
            per_layer = [self.values.get((model, method, layer, name)) for layer in self.layers]
            if any(v is None for v in per_layer):
                continue
            pos = best_positions(np.stack([np.asarray(v, np.float64) for v in per_layer]), name)
            out[method] = best_layer_counts([None if k is None else self.layers[k] for k in pos], self.layers)
        return name, out

    def _mean(self, key: tuple[str, str, str, str]) -> float:
        if key in self.summary:
            return self.summary[key][0]
        v = np.asarray(self.values.get(key, []), dtype=np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    def series(self, method: str, model: str = TRAINED) -> dict[str, list[float]]:
        """``{column title: per-layer mean}`` for one method, in layer order (NaN where a
        layer has no value): the explorer's per-layer chart."""
        out: dict[str, list[float]] = {}
        for metric in self.metrics:
            values = [self._mean((model, method, layer, metric)) for layer in self.layers]
            if any(np.isfinite(v) for v in values):
                out[column(metric).title] = values
        return out

    def table(self, model: str = TRAINED, digits: int = 3) -> str:
        """The terminal table (see :func:`layerscope.evaluate.report.format_table`)."""
        return report.format_table(self, model, digits)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the rows (``.csv`` or ``.parquet``) or the plot (``.png`` or ``.svg``)."""
        return report.save(self, path, overwrite)
