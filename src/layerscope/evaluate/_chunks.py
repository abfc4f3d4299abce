"""The unit of an evaluation's work: a :class:`Scorer` scores one chunk of images — the
captures of each method, then every metric on each model's maps — into a :class:`Chunk` of
per-image values, and :func:`merge` puts the chunks of a run together, in image order, as
one :class:`~layerscope.evaluate.result.Evaluation`. The local engine runs the chunks one
after the other; the Ray engine (``ray_engine.py``) runs them on actors that each hold a
:class:`Scorer`. A chunk's values depend only on its images and their positions in the run
(ROAD draws each image's noise from the seed and that position), never on the chunk.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerscope.evaluate import sanity
from layerscope.evaluate._registry import RANDOM, TRAINED, Batch, Metric
from layerscope.evaluate.result import Evaluation, Plan

#: ``(model, method, layer, column)``: the key of one cell's per-image values.
Key = tuple[str, str, str, str]


@dataclass
class Chunk:
    """What one chunk of images gave.

    Attributes:
        start: the position of its first image in the run.
        n: its number of images.
        values: ``{(model, method, layer, column): float64 (n,)}``.
        cascades: ``{method: sanity.Randomisation}`` of its images (with ``cascade``).
    """

    start: int
    n: int
    values: dict[Key, np.ndarray]
    cascades: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scorer:
    """Everything a chunk is scored with, fixed for the whole run (picklable: a Ray actor
    holds one).

    Attributes:
        model: the trained torch model.
        layers: the layer names, in forward order.
        methods: the CAM methods.
        metrics: the chosen metrics (scored in table order, ``Metric.order``).
        options: the metrics' options (:attr:`Batch.options`, without ``progress``).
        info: the model's :class:`~layerscope.info.ModelInfo`.
        method_options: ``{method: its options}``.
        random_baseline: also score the randomised model's maps.
        need_random: capture the randomised model's maps (the baseline or a metric needs them).
        cascade: run the whole cascading randomisation.
        cascade_steps: its number of steps (for the progress bar).
        random_model: the fully randomised model, made by :meth:`ready` (from ``options["seed"]``).
    """

    model: Any
    layers: list[str]
    methods: list[str]
    metrics: list[Metric]
    options: dict[str, Any]
    info: Any
    method_options: dict[str, dict[str, Any]]
    random_baseline: bool
    need_random: bool
    cascade: bool
    cascade_steps: int
    random_model: Any = None

    def ready(self) -> Scorer:
        """Make the randomised model where it is needed (once; the same from the same seed)."""
        if self.need_random and self.random_model is None:
            self.random_model = sanity.randomised_model(self.model, self.options["seed"])
        return self

    def score(self, x: Any, targets: Any, masks: Any, start: int, bar: Any = None) -> Chunk:
        """Score the images ``x`` (preprocessed ``(n, C, H, W)``), the run's ``start``-th on.

        Args:
            x: the chunk's preprocessed images.
            targets: their targets (``None``: the top-1 class).
            masks: their bool ``(n, H, W)`` object masks, or ``None``.
            start: the position of its first image in the run.
            bar: a tqdm bar of forward passes to advance (or ``None``).
        """
        self.ready()
        n = int(x.shape[0])
        index = np.arange(start, start + n)
        collected: dict[Key, list[np.ndarray]] = {}
        cascades = {}
        ordered = sorted(self.metrics, key=lambda m: m.order)
        for method in self.methods:
            r = self._one_method(collected, x, targets, masks, index, method, ordered, bar)
            if r is not None:
                cascades[method] = r
        values = {k: np.concatenate(v) for k, v in collected.items()}
        return Chunk(start, n, values, cascades)

    def _one_method(
        self,
        collected: dict[Key, list[np.ndarray]],
        xc: Any,
        tc: Any,
        mc: Any,
        index: np.ndarray,
        method: str,
        ordered: list[Metric],
        bar: Any,
    ) -> Any:
        """One chunk, one method: the captures, then every metric on each model's maps."""
        from layerscope.explanation import explain

        names, opts, nc = self.layers, self.method_options.get(method, {}), int(xc.shape[0])
        o = {**self.options, "progress": bar or False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exp = explain(self.model, xc, names, method, tc, info=self.info, **opts)
            exp_r = (
                explain(self.random_model, xc, names, method, [int(t) for t in exp.targets], info=self.info, **opts)
                if self.need_random
                else None
            )
        if bar is not None:
            bar.update(nc * (2 if self.need_random else 1))
        random_maps = None if exp_r is None else [exp_r.cams[layer] for layer in names]

        def add(kind: str, scored: dict[str, Sequence[np.ndarray]]) -> None:
            for col, per_layer in scored.items():
                for layer, v in zip(names, per_layer, strict=True):
                    collected.setdefault((kind, method, layer, col), []).append(np.asarray(v, dtype=np.float64))

        kinds = [(TRAINED, exp)] + ([(RANDOM, exp_r)] if self.random_baseline else [])
        batches = {
            kind: Batch(
                self.model, xc, [e.cams[layer] for layer in names], exp.targets, mc, random_maps, o, index=index
            )
            for kind, e in kinds
        }
        for kind, batch in batches.items():
            for metric in ordered:
                if metric.baseline:
                    add(kind, metric.score(batch))
        for metric in ordered:
            if not metric.baseline:  # the trained model's maps only
                add(TRAINED, metric.score(batches[TRAINED]))
        if not self.cascade:
            return None
        r = sanity.randomisation_check(
            self.model, xc, method, names, exp.targets, trained=exp.cams, seed=o["seed"], info=self.info, **opts
        )
        if bar is not None:
            bar.update(nc * self.cascade_steps)
        return r


def merge(chunks: Iterable[Chunk], scorer: Scorer, plan: Plan) -> Evaluation:
    """The chunks of a run (in any order) as one :class:`Evaluation`, their images in run
    order: the same object whichever engine scored them and however they were split."""
    ordered = sorted(chunks, key=lambda c: c.start)
    values: dict[Key, list[np.ndarray]] = {}
    cascades: dict[str, list[Any]] = {m: [] for m in scorer.methods}
    for c in ordered:
        for k, v in c.values.items():
            values.setdefault(k, []).append(v)
        for m, r in c.cascades.items():
            cascades[m].append(r)
    merged = {
        m: sanity.Randomisation(m, scorer.layers, c[0].steps, np.concatenate([r.correlation for r in c], axis=-1))
        for m, c in cascades.items()
        if c
    }
    columns = [c.name for m in scorer.metrics for c in m.columns]
    seen = sum(c.n for c in ordered)
    return Evaluation(
        scorer.layers, scorer.methods, columns, {k: np.concatenate(v) for k, v in values.items()}, merged, seen, plan
    )
