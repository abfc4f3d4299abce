""" "Which layer should I look at?", answered per image: :func:`rank_layers` scores every
layer's map of an :class:`~layerscope.explanation.Explanation` with one cheap faithfulness
metric of the registry (ROAD at 10/30/50 % on the target's logit by default) and ranks the
layers, best first.

The metric is the registry's own (:mod:`~layerscope.evaluate.road`,
:mod:`~layerscope.evaluate.deletion`, :mod:`~layerscope.evaluate.drop`), given every layer's
maps at once, so all layers' perturbed copies go through the model together,
``perturb_batch`` per forward pass. Only the options differ from ``layerscope evaluate``'s:
fewer fractions and steps, because a ranking needs an order, not a curve; and ROAD measures
the target's logit — the score the map explains — rather than its probability, which a
confident model holds near 1 under LeRF and at the chance floor under MoRF for every good
map alike (:data:`RANK_SCORES`; docs/faithfulness.md, "Which layer?").

It is a function of the model, the images and the explanation rather than a method of
:class:`~layerscope.explanation.Explanation`: an explanation holds neither the model nor its
preprocessed input (only the pictures it is drawn over), and the layering has
``evaluate`` import ``explanation``, never the other way round.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.errors import UsageError, plural
from layerscope.evaluate import _engine as E
from layerscope.evaluate._registry import Batch, Column, column, metric_of, registered
from layerscope.evaluate.road import ROAD_NOISE

log = logging.getLogger("layerscope")

#: The metric a ranking uses unless told otherwise.
DEFAULT_RANK_METRIC = "road"
#: ROAD's removal fractions for a ranking (``layerscope evaluate``: 10 % … 90 %).
RANK_FRACTIONS: tuple[float, ...] = (0.1, 0.3, 0.5)
#: Deletion/insertion steps for a ranking (``layerscope evaluate``: 20).
RANK_STEPS = 5
#: What a ranking's metric measures unless told otherwise (``layerscope evaluate``: the
#: probability for every metric). ROAD: the target's logit, the score Grad-CAM and its family
#: explain. A probability has a floor and a ceiling, the logit has neither. Measured on the
#: demo model (60 shapes images of dataset seed 3): the probability is 0.9994 at the median
#: before any removal; every block-5 map drives it to the chance floor (0.09) by 30 % MoRF
#: and keeps it at 0.97–0.98 under LeRF, so good maps all score about the same (best vs next
#: layer 0.006 at the median) and 28 of 60 picks fall in blocks 1–4; on the logit 19 of 60
#: (pointing game of the pick 0.95 against 0.80; on 200 held-out images 0.890 against 0.880).
#: Average Drop needs a positive score (a relative drop); deletion ranked no better on the
#: logit (0.78 against 0.82), insertion about the same (0.82 against 0.80): they keep the
#: probability, as ``layerscope evaluate``.
RANK_SCORES: dict[str, str] = {
    "road": "logit",
    "deletion": "probability",
    "insertion": "probability",
    "drop": "probability",
}


@dataclass
class LayerRanking:
    """The layers of an explanation ranked by a faithfulness metric, per image.

    Attributes:
        layers: the layer names in forward order.
        metric: the metric's name (``"road"``).
        column: the column ranked by (``"road_combined"``); its direction says which way is better.
        scores: float64 ``(L, N)``, each layer's score per image (NaN for a flat map: it ranks nothing).
        passes: the forward passes the ranking made.
    """

    layers: list[str]
    metric: str
    column: str
    scores: np.ndarray
    passes: int = 0

    @property
    def title(self) -> str:
        """The column's title, ``"ROAD combined"``."""
        return column(self.column).title

    @property
    def direction(self) -> str:
        return column(self.column).direction

    def order(self, index: int = 0) -> list[int]:
        """Layer positions of image ``index``, best first (ties in forward order; flat maps last)."""
        col = column(self.column)
        s = self.scores[:, _check_index(index, self.scores.shape[1])]
        finite = [k for k in range(len(self.layers)) if np.isfinite(s[k])]
        ranked = sorted(finite, key=lambda k: -col.key(float(s[k])))  # stable: ties keep forward order
        return ranked + [k for k in range(len(self.layers)) if k not in finite]

    def ranking(self, index: int = 0) -> list[tuple[str, float]]:
        """``[(layer, score), …]`` of image ``index``, best first."""
        return [(self.layers[k], float(self.scores[k, index])) for k in self.order(index)]

    @property
    def best(self) -> list[str | None]:
        """The best layer of each image (``None`` where every map is flat)."""
        return [None if k is None else self.layers[k] for k in best_positions(self.scores, self.column)]

    def table(self, index: int = 0, digits: int = 3) -> str:
        """Image ``index``'s ranking as text: rank, layer, score, the best starred."""
        col = column(self.column)
        rows = self.ranking(index)
        w = max(len(r[0]) for r in rows)
        lines = [f"layers ranked by {col.title} ({col.wording}):"]
        for k, (layer, v) in enumerate(rows, 1):
            value = f"{v:.{digits}f}" if np.isfinite(v) else "— (flat map)"
            lines.append(f"  {k:>2}. {layer:{w}s}  {value}" + ("  ★" if k == 1 and np.isfinite(v) else ""))
        return "\n".join(lines) + "\n"

    def mark(self, exp: Any) -> Any:
        """A copy of ``exp`` whose best layer of each image is marked ★ in its captions and
        on the explorer page (:attr:`~layerscope.explanation.Explanation.best_layers`)."""
        if list(exp.layers) != list(self.layers) or len(exp.targets) != self.scores.shape[1]:
            raise UsageError("this ranking is of another explanation (its layers or images differ)")
        return dataclasses.replace(exp, best_layers=self.best, best_by=self.title)


def best_positions(scores: np.ndarray, column_name: str) -> list[int | None]:
    """Per image, the position of the best layer of ``scores`` ``(L, N)`` by the column's
    direction (ties: the earliest layer; NaN never wins; ``None`` when all are NaN)."""
    col = column(column_name)
    out: list[int | None] = []
    for i in range(scores.shape[1]):
        finite = [k for k in range(scores.shape[0]) if np.isfinite(scores[k, i])]
        out.append(max(finite, key=lambda k: (col.key(float(scores[k, i])), -k)) if finite else None)
    return out


def _check_index(index: int, n: int) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise UsageError(f"image index {index!r} is out of range for {plural(n, 'image')}")
    return int(index)


def rank_metrics() -> list[str]:
    """The metrics a ranking can use: those that re-run the model on the maps alone (no
    object masks, no randomised model)."""
    return [m.name for m in registered() if m.passes is not None and not m.needs_masks and not m.needs_random]


def _resolve_metric(metric: str) -> tuple[Any, Column]:
    """The metric and the column ranked by: a metric's headline (``"road"``) or a column (``"road_morf"``)."""
    m = metric_of(metric)
    if m.name not in rank_metrics():
        raise UsageError(
            f"layers are ranked by a metric that needs only the model and the maps: {', '.join(rank_metrics())}; "
            f"not {metric!r}"
        )
    name = metric if metric in {c.name for c in m.columns} else m.headline_column
    return m, column(name)


def rank_options(
    output: str = "logits",
    *,
    fractions: Sequence[float] = RANK_FRACTIONS,
    steps: int = RANK_STEPS,
    baseline: str | Sequence[str] = ("zero", "blur"),
    noise: float = ROAD_NOISE,
    seed: int = 0,
    score: str = "probability",
    perturb_batch: int = 256,
) -> dict[str, Any]:
    """The metric options of a ranking (:attr:`~layerscope.evaluate.Batch.options`), checked
    (``score`` as given: :func:`rank_layers` resolves its default per metric, :data:`RANK_SCORES`)."""
    if steps < 1:
        raise UsageError(f"steps must be at least 1, not {steps}")
    if perturb_batch < 1:
        raise UsageError(f"perturb_batch must be at least 1, not {perturb_batch}")
    if score not in E.SCORES:
        raise UsageError(f"unknown score {score!r}; expected one of {', '.join(E.SCORES)}")
    return {
        "steps": int(steps),
        "baseline": baseline if isinstance(baseline, str) else tuple(baseline),
        "fractions": tuple(E.check_fractions(fractions, "fractions")),
        "noise": float(noise),
        "seed": int(seed),
        "output": output,
        "score": score,
        "perturb_batch": int(perturb_batch),
        "energy_region": "box",
    }


def rank_score(metric: str, score: str | None = None) -> str:
    """What a ranking by ``metric`` (a metric or a column) measures: ``score`` if given, else
    the metric's entry of :data:`RANK_SCORES` (``"logit"`` for ROAD)."""
    m, _ = _resolve_metric(metric)
    return score if score is not None else RANK_SCORES.get(m.name, "probability")


def rank_passes(metric: str, n_images: int, n_layers: int, pixels: int, **options: Any) -> int:
    """The forward passes :func:`rank_layers` makes (the metric's own count, ``Metric.passes``)."""
    m, _ = _resolve_metric(metric)
    o = rank_options(**{**options, "score": rank_score(metric, options.get("score"))})
    return sum(m.passes(n_images, n_layers, pixels, o).values())


def _as_input(images: Any, exp: Any, preprocess: Any) -> Any:
    import torch

    if images is None:
        images = list(exp.images)
    if isinstance(images, torch.Tensor) or (isinstance(images, np.ndarray) and images.dtype.kind == "f"):
        x = torch.as_tensor(images)
        return x[None] if x.ndim == 3 else x
    from layerscope.inputs import prepare_batch

    prep = preprocess if preprocess is not None else exp.info.preprocessor()
    x, _ = prepare_batch(images, prep)
    return torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x


def rank_layers(
    model: Any,
    exp: Any,
    images: Any = None,
    metric: str = DEFAULT_RANK_METRIC,
    *,
    fractions: Sequence[float] = RANK_FRACTIONS,
    steps: int = RANK_STEPS,
    baseline: str | Sequence[str] = ("zero", "blur"),
    noise: float = ROAD_NOISE,
    seed: int = 0,
    score: str | None = None,
    perturb_batch: int = 256,
    preprocess: Any = None,
    progress: Any = False,
) -> LayerRanking:
    """Rank the layers of ``exp`` for each image by how faithful their maps are.

    Every layer's map of every image is scored with ``metric`` on ``model`` — by default
    ROAD (Rong et al. 2022) at 10, 30 and 50 % (MoRF and LeRF, combined: higher is better),
    the per-layer score CAManim ranks layers by, here on the target's logit — all layers
    together: their perturbed copies go through the model ``perturb_batch`` per forward pass. The scores are those of
    the metric function itself (:func:`~layerscope.evaluate.road`,
    :func:`~layerscope.evaluate.deletion_insertion`,
    :func:`~layerscope.evaluate.average_drop_increase`) called on each layer's maps. A flat
    map (nothing to rank pixels by) gets no score and ranks last.

    Cost, announced on the ``layerscope`` logger (INFO) before starting: ROAD one pass per
    image plus ``2 × len(fractions)`` per image and layer (and as many imputations, sparse
    solves on the CPU: the dominant cost); deletion/insertion one per image for the original
    and one per substrate, plus ``2 × (steps − 1)`` per image and layer; drop one per image
    plus one per image and layer (:func:`rank_passes`).

    Args:
        model: the PyTorch model ``exp`` explains (the metric re-runs it; Keras models are not supported).
        exp: the :class:`~layerscope.explanation.Explanation` whose layers are ranked; the
            classes ranked for are its ``targets``.
        images: the images ``exp`` was made from, as :func:`layerscope.explain` takes them
            (a preprocessed tensor is used as it is); default ``exp.images`` through the model
            info's preprocessing, which is exactly the model's input when ``exp`` was made from
            pictures with that preprocessing (give ``images`` if it was made from a tensor or
            with ``preprocess=``).
        metric: ``"road"``, ``"deletion"``, ``"insertion"`` or ``"drop"`` (its headline column),
            or a column (``"road_morf"``); see :func:`rank_metrics`.
        fractions, noise: ROAD's (:func:`~layerscope.evaluate.road`).
        steps, baseline: deletion/insertion's (:func:`~layerscope.evaluate.deletion_insertion`).
        seed: ROAD's noise seed.
        score: ``"logit"`` (the model's output for the target, the score the map explains)
            or ``"probability"`` (its softmax); default :data:`RANK_SCORES` — the logit for
            ROAD, whose probability saturates on a confident model; the probability for
            deletion/insertion and Average Drop.
        perturb_batch: perturbed copies per forward pass.
        preprocess: the preprocessing ``images`` need (default: the model info's).
        progress: ``True`` for a tqdm bar of the forward passes, or a tqdm bar to advance.

    Returns:
        A :class:`LayerRanking`; :meth:`LayerRanking.mark` gives ``exp`` with the best layers marked ★.
    """
    import torch

    m, col = _resolve_metric(metric)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(
            "ranking layers re-runs the model on perturbed copies of the image: it needs a PyTorch model "
            "(torch.nn.Module); Keras models are not supported"
        )
    if not exp.layers:
        raise UsageError("the explanation has no layer to rank")
    o = rank_options(
        exp.info.output or "logits", fractions=fractions, steps=steps, baseline=baseline, noise=noise, seed=seed,
        score=rank_score(metric, score), perturb_batch=perturb_batch,
    )  # fmt: skip
    x = _as_input(images, exp, preprocess)
    n = len(exp.targets)
    if x.ndim != 4 or int(x.shape[0]) != n:
        raise UsageError(f"{n} images explained but the input is shaped {tuple(x.shape)}: give the same images")
    maps = [np.asarray(exp.cams[layer], dtype=np.float32) for layer in exp.layers]
    passes = sum(m.passes(n, len(maps), int(x.shape[-2] * x.shape[-1]), o).values())
    log.info(
        "rank layers: %s forward passes to score %s × %s by %s", f"{passes:,}", plural(len(maps), "layer"),
        plural(n, "image"), col.title,
    )  # fmt: skip
    bar = E.progress_bar(passes, f"ranking layers by {m.name}", progress)
    try:
        batch = Batch(model, x, maps, np.asarray(exp.targets), options={**o, "progress": bar or False})
        scored = m.score(batch)[col.name]
    finally:
        E.close_bar(bar, progress)
    scores = np.stack([np.asarray(s, dtype=np.float64).reshape(n) for s in scored])
    flat = np.stack([np.asarray(exp.flat[layer], dtype=bool).reshape(n) for layer in exp.layers])
    scores[flat] = np.nan
    return LayerRanking(list(exp.layers), m.name, col.name, scores, passes)


def best_layer_counts(best: Sequence[str | None], layers: Sequence[str]) -> dict[str, int]:
    """``{layer: images it is best for}``, every layer in forward order (``None``: no best layer)."""
    counts = dict.fromkeys(layers, 0)
    for b in best:
        if b is not None:
            counts[b] += 1
    return counts
