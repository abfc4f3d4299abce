"""Every metric at every layer: :func:`evaluate` scores the maps of one capture per method (a
tour: every layer at once), on one image or many, against the model and, as a baseline, the
same maps made by the fully randomised model.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.evaluate import localisation, perturbation, sanity

log = logging.getLogger("layerscope")

#: The metric groups :func:`evaluate` accepts, and the columns each one gives.
METRICS: dict[str, tuple[str, ...]] = {
    "deletion": ("deletion_auc",),
    "insertion": ("insertion_auc",),
    "road": ("road_morf", "road_lerf", "road_combined"),
    "drop": ("average_drop", "average_increase"),
    "pointing": ("pointing_game",),
    "energy": ("energy_pointing_game",),
    "sanity": ("randomisation_rank_corr",),
}
#: The default metric groups (``pointing`` and ``energy`` need masks and are left out without).
DEFAULT_METRICS: tuple[str, ...] = ("deletion", "insertion", "road", "drop", "pointing", "energy", "sanity")
#: Whether a higher value of each metric is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "deletion_auc": False,
    "insertion_auc": True,
    "road_morf": False,
    "road_lerf": True,
    "road_combined": True,
    "average_drop": False,
    "average_increase": True,
    "pointing_game": True,
    "energy_pointing_game": True,
    "randomisation_rank_corr": False,  # nearer 0 is better: the map depends on the weights
}
#: Human-readable metric names for tables and plots.
TITLES: dict[str, str] = {
    "deletion_auc": "Deletion AUC",
    "insertion_auc": "Insertion AUC",
    "road_morf": "ROAD MoRF",
    "road_lerf": "ROAD LeRF",
    "road_combined": "ROAD combined",
    "average_drop": "Average Drop",
    "average_increase": "Average Increase",
    "pointing_game": "Pointing game",
    "energy_pointing_game": "Energy pointing game",
    "randomisation_rank_corr": "Rank corr. with random model",
}
#: The two models a row can describe: the one explained, and its fully randomised copy.
TRAINED, RANDOM = "trained", "random"


def check_metrics(metrics: str | Sequence[str]) -> list[str]:
    """Metric group names, checked (an unknown one is an error naming the valid ones)."""
    items = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    bad = [m for m in items if m not in METRICS]
    if bad:
        raise UsageError(f"unknown metric {', '.join(map(repr, bad))}; valid metrics: {', '.join(METRICS)}")
    if not items:
        raise UsageError(f"no metric given; valid metrics: {', '.join(METRICS)}")
    return list(dict.fromkeys(items))


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
            f"{self.total:,} forward passes for {self.images} image(s) × {self.layers} layer(s) × "
            f"{self.methods} method(s) ({parts})"
        )


def plan(
    n_images: int,
    n_layers: int,
    n_methods: int,
    metrics: Sequence[str],
    pixels: int,
    *,
    steps: int = 20,
    baseline: str | Sequence[str] = ("zero", "blur"),
    fractions: Sequence[float] = perturbation.ROAD_FRACTIONS,
    random_baseline: bool = True,
    cascade_steps: int = 0,
) -> Plan:
    """The forward passes :func:`evaluate` will make (see each metric's cost)."""
    metrics = check_metrics(metrics)
    models = 2 if random_baseline else 1
    b = perturbation._baseline_pair(baseline)
    p = Plan(n_images, n_layers, n_methods)
    random_capture = random_baseline or "sanity" in metrics
    p.passes["capture"] = n_images * n_methods * (1 + int(random_capture) + cascade_steps)
    if "deletion" in metrics or "insertion" in metrics:
        p.passes["deletion/insertion"] = models * perturbation.deletion_insertion_passes(
            n_images * n_methods, n_layers, pixels, steps, b[0] == b[1]
        )
    if "road" in metrics:
        p.passes["ROAD"] = models * perturbation.road_passes(n_images * n_methods, n_layers, fractions)
    if "drop" in metrics:
        p.passes["drop/increase"] = models * n_images * n_methods * (1 + n_layers)
    return p


@dataclass
class Evaluation:
    """The per-image values of every metric, layer, method and model.

    Attributes:
        layers: layer names in forward order (depth = position).
        methods: the CAM methods.
        metrics: the metric columns computed (see :data:`METRICS`).
        values: ``{(model, method, layer, metric): float64 (N,)}`` per-image values;
            ``model`` is ``"trained"`` or ``"random"`` (maps of the fully randomised model,
            scored on the trained one).
        cascade: ``{method: sanity.Randomisation}`` when the full cascade was run.
        images: number of images.
        plan: the announced cost.
    """

    layers: list[str]
    methods: list[str]
    metrics: list[str]
    values: dict[tuple[str, str, str, str], np.ndarray]
    cascade: dict[str, sanity.Randomisation] = field(default_factory=dict)
    images: int = 0
    plan: Plan | None = None
    #: ``{key: (mean, sem, n)}`` for an evaluation read back from its rows (no per-image values).
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
        order = [m for m in METRICS.values() for m in m]
        ev = cls(
            sorted(layers, key=layers.__getitem__),
            list(methods),
            sorted(metrics, key=lambda m: order.index(m) if m in order else len(order)),
            {k: np.asarray([v[0]]) for k, v in summary.items()},
            images=max((v[2] for v in summary.values()), default=0),
            summary=summary,
        )
        return ev

    def mean(self, metric: str, method: str, layer: str, model: str = TRAINED) -> float:
        """The mean over images (NaN ignored; NaN where nothing was measured)."""
        v = self.values.get((model, method, layer, metric))
        if v is None or not np.isfinite(v).any():
            return math.nan
        return float(np.nanmean(v))

    def count(self, metric: str) -> int:
        """Images measured for ``metric`` (the most over its cells)."""
        counts = [v[2] for k, v in self.summary.items() if k[3] == metric]
        counts += [
            int(np.isfinite(v).sum()) for k, v in self.values.items() if k[3] == metric and k not in self.summary
        ]
        return max(counts, default=0)

    def rows(self) -> list[dict[str, Any]]:
        """One record per model, method, layer and metric: mean, standard error, count."""
        out = []
        for (model, method, layer, metric), v in self.values.items():
            if (model, method, layer, metric) in self.summary:
                value, sem, count = self.summary[(model, method, layer, metric)]
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
                continue
            ok = v[np.isfinite(v)]
            out.append(
                {
                    "model": model,
                    "method": method,
                    "layer": layer,
                    "depth": self.layers.index(layer) + 1,
                    "metric": metric,
                    "value": float(ok.mean()) if len(ok) else math.nan,
                    "sem": float(ok.std(ddof=1) / math.sqrt(len(ok))) if len(ok) > 1 else math.nan,
                    "n": len(ok),
                }
            )
        return out

    def best(self, metric: str, model: str = TRAINED) -> tuple[str, str, float]:
        """``(method, layer, value)`` with the best mean for ``metric`` (for the rank
        correlation with the random model: the one nearest 0)."""
        cands = []
        for m in self.methods:
            for layer in self.layers:
                v = self.mean(metric, m, layer, model)
                if np.isfinite(v):
                    key = -abs(v) if metric == "randomisation_rank_corr" else (v if HIGHER_IS_BETTER[metric] else -v)
                    cands.append((key, m, layer, v))
        if not cands:
            raise UsageError(f"metric {metric!r} was not measured")
        _, m, layer, v = max(cands, key=lambda c: c[0])
        return m, layer, v

    def _mean(self, key: tuple[str, str, str, str]) -> float:
        if key in self.summary:
            return self.summary[key][0]
        v = np.asarray(self.values.get(key, []), dtype=np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    def series(self, method: str, model: str = TRAINED) -> dict[str, list[float]]:
        """``{metric title: per-layer mean}`` for one method, in layer order (NaN where a
        layer has no value): the explorer's per-layer chart."""
        out: dict[str, list[float]] = {}
        for metric in self.metrics:
            values = [self._mean((model, method, layer, metric)) for layer in self.layers]
            if any(np.isfinite(v) for v in values):
                out[TITLES.get(metric, metric)] = values
        return out

    def table(self, model: str = TRAINED, digits: int = 3) -> str:
        from layerscope.evaluate.report import format_table

        return format_table(self, model, digits)

    def save(self, path: Any, overwrite: bool = False) -> Any:
        """Write the rows (``.csv`` or ``.parquet``) or the plot (``.png`` or ``.svg``)."""
        from layerscope.evaluate.report import save

        return save(self, path, overwrite)


def _as_input(model: Any, images: Any, info: Any) -> Any:
    """The preprocessed batch for ``images`` (a tensor passes through)."""
    import torch

    if isinstance(images, torch.Tensor) or (isinstance(images, np.ndarray) and images.dtype.kind == "f"):
        x = torch.as_tensor(images)
        return x[None] if x.ndim == 3 else x
    from layerscope.inputs import as_rgb_array

    if isinstance(images, (str, bytes)) or not isinstance(images, (Sequence, np.ndarray)):
        images = [images]
    if len(images) == 0:
        raise UsageError("no image given")
    return torch.as_tensor(np.asarray(info.preprocessor()([as_rgb_array(im) for im in images])))


def evaluate(
    model: Any,
    images: Any,
    methods: str | Sequence[str] = "gradcam",
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    layers: str | Sequence[str] | None = None,
    target: Any = None,
    masks: np.ndarray | None = None,
    *,
    steps: int = 20,
    baseline: str | Sequence[str] = ("zero", "blur"),
    fractions: Sequence[float] = perturbation.ROAD_FRACTIONS,
    noise: float = perturbation.ROAD_NOISE,
    energy_region: str = "box",
    random_baseline: bool = True,
    cascade: bool = False,
    score: str = "probability",
    batch_size: int = 256,
    chunk: int = 64,
    seed: int = 0,
    info: Any = None,
    progress: bool = False,
    method_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Every chosen metric at every chosen layer, for each method, from one capture per method.

    For each chunk of ``chunk`` images and each method: one :func:`layerscope.explain` of all
    layers; the perturbation metrics (:mod:`~layerscope.evaluate.perturbation`) score all the
    layers' maps together, their perturbed inputs ``batch_size`` per forward pass; the
    localisation metrics (:mod:`~layerscope.evaluate.localisation`) need ``masks``. With
    ``random_baseline`` the fully randomised model
    (:func:`~layerscope.evaluate.sanity.randomised_model`) is explained too, and its maps
    are scored on the trained model the same way (rows of model ``"random"``): a faithful
    map must beat them. ``"sanity"`` is the rank correlation between the trained and the
    random model's maps (that same second capture); ``cascade=True`` also runs the whole
    cascade (:func:`~layerscope.evaluate.sanity.randomisation_check`).

    The cost is logged (``layerscope`` logger, INFO) before starting: :func:`plan`.

    Args:
        model: a torch model.
        images: what :func:`layerscope.explain` takes (paths, arrays, a list, or a
            preprocessed ``(N, C, H, W)`` tensor).
        methods: a method name or several (comma-separated or a list).
        metrics: metric groups from :data:`METRICS`.
        layers: as :func:`layerscope.explain` (default: every conv layer).
        target: as :func:`layerscope.explain` (default: the top-1 class).
        masks: bool ``(N, H, W)`` object masks for ``pointing`` and ``energy``.
        steps, baseline: deletion/insertion options (:func:`perturbation.deletion_insertion`).
        fractions, noise: ROAD options (:func:`perturbation.road`).
        energy_region: ``"box"`` (the paper's) or ``"mask"``.
        random_baseline: also score the randomised model's maps.
        cascade: run the cascading randomisation too (one capture per parameterised module).
        score: ``"probability"`` or ``"logit"``.
        batch_size: perturbed inputs per forward pass.
        chunk: images captured and scored together (bounds memory).
        seed: the randomisation's and ROAD noise's seed.
        info: the model's :class:`~layerscope.info.ModelInfo`.
        progress: show a tqdm bar of the forward passes.
        method_options: options for the methods that have them.

    Returns:
        An :class:`Evaluation`.
    """
    import torch

    from layerscope.explanation import explain, resolve_target
    from layerscope.info import info_for
    from layerscope.methods import get_method

    groups = check_metrics(metrics)
    method_list = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if not method_list:
        raise UsageError("no method given")
    for m in method_list:
        get_method(m)
    if not isinstance(model, torch.nn.Module):
        raise UsageError("layerscope evaluate needs a PyTorch model (the metrics re-run it on perturbed inputs)")
    if chunk < 1:
        raise UsageError(f"chunk must be at least 1, not {chunk}")
    facts = info_for(model, info)
    x = _as_input(model, images, facts)
    n = int(x.shape[0])
    if masks is None:
        dropped = [g for g in groups if g in ("pointing", "energy")]
        if dropped:
            groups = [g for g in groups if g not in dropped]
            if not groups:
                raise UsageError("the pointing games need object masks (a data set that has them, e.g. --shapes N)")
            warnings.warn(f"no object masks: {' and '.join(dropped)} left out", stacklevel=2)
    else:
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3 or masks.shape[0] != n:
            raise UsageError(f"masks must be (N, H, W) bool with N = {n}, got {masks.shape}")
    targets = resolve_target(target, facts.class_names)
    if targets is not None and not isinstance(targets, list):
        targets = [targets] * n
    opts = dict(method_options or {})
    per_method_opts = {m: {k: v for k, v in opts.items() if k in get_method(m).options} for m in method_list}
    names = [name for name, _ in _resolve(model, layers, facts)]
    columns = [c for g in groups for c in METRICS[g]]
    need_random = random_baseline or "sanity" in groups
    cascade_steps = len(sanity.randomisable_modules(model)) if cascade else 0
    the_plan = plan(
        n,
        len(names),
        len(method_list),
        groups,
        int(x.shape[-2] * x.shape[-1]),
        steps=steps,
        baseline=baseline,
        fractions=fractions,
        random_baseline=random_baseline,
        cascade_steps=cascade_steps,
    )
    log.info("evaluate: %s", the_plan.describe())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=the_plan.total, desc="evaluate", unit="pass")
    random_model = sanity.randomised_model(model, seed) if need_random else None
    collected: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
    cascades: dict[str, list[sanity.Randomisation]] = {m: [] for m in method_list}

    def add(model_kind: str, method: str, metric: str, per_layer: Sequence[np.ndarray]) -> None:
        for layer, v in zip(names, per_layer, strict=True):
            collected.setdefault((model_kind, method, layer, metric), []).append(np.asarray(v, dtype=np.float64))

    kw = {"output": facts.output or "logits", "score": score, "batch_size": batch_size, "progress": bar or False}
    try:
        for start in range(0, n, chunk):
            xc = x[start : start + chunk]
            nc = int(xc.shape[0])
            tc = None if targets is None else targets[start : start + chunk]
            mc = None if masks is None else masks[start : start + chunk]
            for method in method_list:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exp = explain(model, xc, names, method, tc, info=facts, **per_method_opts[method])
                    exp_r = (
                        explain(
                            random_model,
                            xc,
                            names,
                            method,
                            [int(t) for t in exp.targets],
                            info=facts,
                            **per_method_opts[method],
                        )
                        if need_random
                        else None
                    )
                if bar is not None:
                    bar.update(nc * (2 if need_random else 1))
                kinds = [(TRAINED, exp)] + ([(RANDOM, exp_r)] if random_baseline else [])
                for kind, e in kinds:
                    maps = [e.cams[layer] for layer in names]
                    _score_maps(
                        add,
                        kind,
                        method,
                        model,
                        xc,
                        maps,
                        exp.targets,
                        mc,
                        groups,
                        kw,
                        steps=steps,
                        baseline=baseline,
                        fractions=fractions,
                        noise=noise,
                        seed=seed,
                        energy_region=energy_region,
                    )
                if "sanity" in groups:
                    add(
                        TRAINED,
                        method,
                        "randomisation_rank_corr",
                        [sanity.rank_correlation(exp.cams[layer], exp_r.cams[layer]) for layer in names],
                    )
                if cascade:
                    cascades[method].append(
                        sanity.randomisation_check(
                            model,
                            xc,
                            method,
                            names,
                            exp.targets,
                            trained=exp.cams,
                            seed=seed,
                            info=facts,
                            **per_method_opts[method],
                        )
                    )
                    if bar is not None:
                        bar.update(nc * cascade_steps)
    finally:
        if bar is not None:
            bar.close()
    values = {k: np.concatenate(v) for k, v in collected.items()}
    merged = {
        m: sanity.Randomisation(m, names, c[0].steps, np.concatenate([r.correlation for r in c], axis=-1))
        for m, c in cascades.items()
        if c
    }
    return Evaluation(names, method_list, columns, values, merged, n, the_plan)


def _resolve(model: Any, layers: Any, facts: Any) -> list[tuple[str, str]]:
    from layerscope.capture import get_adapter

    return get_adapter("torch").resolve_layers(model, layers, facts)


def _score_maps(
    add: Any,
    kind: str,
    method: str,
    model: Any,
    x: Any,
    maps: list[np.ndarray],
    targets: np.ndarray,
    masks: np.ndarray | None,
    groups: Sequence[str],
    kw: dict[str, Any],
    *,
    steps: int,
    baseline: Any,
    fractions: Sequence[float],
    noise: float,
    seed: int,
    energy_region: str,
) -> None:
    if "deletion" in groups or "insertion" in groups:
        di = perturbation.deletion_insertion(model, x, maps, targets, steps=steps, baseline=baseline, **kw)
        if "deletion" in groups:
            add(kind, method, "deletion_auc", di.deletion)
        if "insertion" in groups:
            add(kind, method, "insertion_auc", di.insertion)
    if "road" in groups:
        r = perturbation.road(model, x, maps, targets, fractions=fractions, noise=noise, seed=seed, **kw)
        add(kind, method, "road_morf", r.morf.mean(axis=-1))
        add(kind, method, "road_lerf", r.lerf.mean(axis=-1))
        add(kind, method, "road_combined", r.combined)
    if "drop" in groups:
        d = perturbation.average_drop_increase(model, x, maps, targets, **kw)
        add(kind, method, "average_drop", d.drop)
        add(kind, method, "average_increase", d.increase.astype(np.float64))
    if masks is not None and "pointing" in groups:
        add(kind, method, "pointing_game", [localisation.pointing_game(m, masks).astype(np.float64) for m in maps])
    if masks is not None and "energy" in groups:
        add(
            kind,
            method,
            "energy_pointing_game",
            [localisation.energy_pointing_game(m, masks, energy_region) for m in maps],
        )
