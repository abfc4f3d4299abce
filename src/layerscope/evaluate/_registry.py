"""The metric registry: a :class:`Metric` says what it measures (its columns, which way is
better, their titles), what it costs (forward passes) and how it scores one batch of maps.
Each metric module calls :func:`register`; :func:`layerscope.evaluate.evaluate` asks the
registry and knows no metric by name.

Pure Python: importing it imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerscope.errors import UsageError, unknown_name

#: The two models a row can describe: the one explained, and its fully randomised copy.
TRAINED, RANDOM = "trained", "random"
#: Which way a column is better.
DIRECTIONS = ("higher", "lower", "zero")


@dataclass(frozen=True)
class Column:
    """One number a metric gives per image.

    Attributes:
        name: the column's name in the rows (``"deletion_auc"``).
        title: human-readable, for tables and plots.
        direction: ``"higher"`` / ``"lower"`` is better, or ``"zero"`` (nearer 0 is better).
    """

    name: str
    title: str
    direction: str = "higher"

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓", "zero": "→0"}[self.direction]

    @property
    def wording(self) -> str:
        return {"higher": "higher is better", "lower": "lower is better", "zero": "nearer 0 is better"}[self.direction]

    def key(self, value: float) -> float:
        """A sort key: the larger, the better."""
        return {"higher": value, "lower": -value, "zero": -abs(value)}[self.direction]


@dataclass
class Batch:
    """What a metric's score function is given: one batch of images and one model's maps.

    Attributes:
        model: the trained torch model (the perturbation metrics re-run it).
        x: the preprocessed ``(N, C, H, W)`` tensor.
        maps: one ``(N, h, w)`` array per layer, in layer order (trained or random model's).
        targets: ``(N,)`` the explained classes.
        masks: bool ``(N, H, W)`` object masks, or ``None``.
        random_maps: the fully randomised model's maps of the same layers (or ``None``).
        options: the evaluation's options (``steps``, ``baseline``, ``fractions``, ``noise``,
            ``seed``, ``energy_region``, ``output``, ``score``, ``perturb_batch``, ``progress``).
        cache: shared by the metrics of one batch (deletion and insertion share one run).
        index: ``(N,)`` the images' positions in the whole evaluation, from which a metric
            draws each image's random numbers (ROAD's noise), so that the values do not
            depend on how the images are split into batches; ``None``: ``0 … N−1``.
    """

    model: Any
    x: Any
    maps: list[np.ndarray]
    targets: Any
    masks: np.ndarray | None = None
    random_maps: list[np.ndarray] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    index: np.ndarray | None = None

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per batch and maps, for every metric asking with ``key``."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def perturbation_kw(self) -> dict[str, Any]:
        """The keyword arguments every perturbation metric takes."""
        o = self.options
        return {
            "output": o.get("output", "logits"),
            "score": o.get("score", "probability"),
            "perturb_batch": o.get("perturb_batch", 256),
            "progress": o.get("progress", False),
        }


@dataclass(frozen=True)
class Metric:
    """A metric of the suite.

    Attributes:
        name: the name ``metrics=`` / ``--metrics`` takes (``"deletion"``).
        columns: what it gives, each a :class:`Column`.
        score: ``score(batch: Batch) -> {column name: per-layer list of (N,) arrays}``.
        passes: ``passes(n_images, n_layers, pixels, options) -> {part: forward passes}`` for
            one model's maps; parts with the same name are counted once (shared work).
        headline: the column :meth:`Evaluation.best` uses for this metric (default: the first).
        needs_masks: left out (with a warning) when no object masks are given.
        needs_random: needs the fully randomised model's maps (``Batch.random_maps``).
        baseline: also scored on the random model's maps, as a baseline row.
        order: where it comes in tables and the default list (lower first).
        default: in the default ``metrics=``.
        options: the options it reads from :attr:`Batch.options` beyond the suite's own
            (``evaluate(..., name=value)`` passes them).
    """

    name: str
    columns: tuple[Column, ...]
    score: Callable[[Batch], dict[str, Sequence[np.ndarray]]]
    passes: Callable[[int, int, int, dict[str, Any]], dict[str, int]] | None = None
    headline: str | None = None
    needs_masks: bool = False
    needs_random: bool = False
    baseline: bool = True
    order: int = 100
    default: bool = True
    options: tuple[str, ...] = ()

    @property
    def headline_column(self) -> str:
        return self.headline or self.columns[0].name


_METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the suite (a second metric of the same name, or a column another
    metric already gives, is an error)."""
    if metric.name in _METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    taken = {c.name for m in _METRICS.values() for c in m.columns}
    for c in metric.columns:
        if c.direction not in DIRECTIONS:
            raise ValueError(f"column {c.name!r}: direction must be one of {', '.join(DIRECTIONS)}")
        if c.name in taken or c.name in _METRICS:
            raise ValueError(f"column {c.name!r} is already given by another metric")
    _METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (for tests that register a toy one)."""
    _METRICS.pop(name, None)


def registered() -> list[Metric]:
    """Every metric, in table order."""
    return sorted(_METRICS.values(), key=lambda m: m.order)


def get_metric(name: str) -> Metric:
    """The metric called ``name`` (an unknown name lists the close matches)."""
    try:
        return _METRICS[name]
    except KeyError:
        raise UsageError(unknown_name("metric", name, [m.name for m in registered()])) from None


def column(name: str) -> Column:
    """The column called ``name``, whichever metric gives it."""
    for m in _METRICS.values():
        for c in m.columns:
            if c.name == name:
                return c
    raise UsageError(unknown_name("metric column", name, column_names()))


def column_names() -> list[str]:
    """Every column, in table order."""
    return [c.name for m in registered() for c in m.columns]


def metric_of(name: str) -> Metric:
    """The metric called ``name``, or the one giving the column ``name``."""
    if name in _METRICS:
        return _METRICS[name]
    for m in _METRICS.values():
        if any(c.name == name for c in m.columns):
            return m
    raise UsageError(
        unknown_name("metric", name, [m.name for m in registered()] + column_names(), valid="Valid metrics")
    )


def default_metrics() -> tuple[str, ...]:
    """The default ``metrics=`` (every metric marked default, in table order)."""
    return tuple(m.name for m in registered() if m.default)


def check_metrics(metrics: str | Sequence[str]) -> list[str]:
    """Metric names, checked (an unknown one is an error naming the close matches)."""
    items = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    for m in items:
        get_metric(m)
    if not items:
        raise UsageError(f"no metric given; valid metrics: {', '.join(m.name for m in registered())}")
    return list(dict.fromkeys(items))
