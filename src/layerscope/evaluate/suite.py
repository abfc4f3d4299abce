"""The metric suite: :func:`evaluate` scores the maps of one capture per method (every layer
at once), on one image or many, with every chosen metric of the registry, against the model
and, as a baseline, the same maps made by the fully randomised model. It asks each
:class:`~layerscope.evaluate._registry.Metric` what it costs and how it scores; it names
none of them.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from layerscope.errors import UsageError, unknown_name
from layerscope.evaluate import ray_engine, sanity
from layerscope.evaluate._chunks import Chunk, Scorer, merge
from layerscope.evaluate._registry import check_metrics, default_metrics, get_metric
from layerscope.evaluate.result import Evaluation, Plan
from layerscope.evaluate.road import ROAD_FRACTIONS, ROAD_NOISE

log = logging.getLogger("layerscope")

#: The options every metric may read from :attr:`Batch.options`, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "steps": 20,
    "baseline": ("zero", "blur"),
    "fractions": ROAD_FRACTIONS,
    "noise": ROAD_NOISE,
    "seed": 0,
    "energy_region": "box",
    "output": "logits",
    "score": "probability",
    "perturb_batch": 256,
}


def plan(
    n_images: int,
    n_layers: int,
    n_methods: int,
    metrics: str | Sequence[str],
    pixels: int,
    *,
    random_baseline: bool = True,
    cascade_steps: int = 0,
    **options: Any,
) -> Plan:
    """The forward passes :func:`evaluate` will make: the captures, then each metric's own
    (``Metric.passes``; a part two metrics share, as deletion and insertion, once), for the
    trained model's maps and, with ``random_baseline``, the random model's.

    ``options`` are the metrics' options (``steps``, ``baseline``, ``fractions`` …, see
    :data:`DEFAULT_OPTIONS`).
    """
    chosen = [get_metric(m) for m in check_metrics(metrics)]
    o = {**DEFAULT_OPTIONS, **options}
    p = Plan(n_images, n_layers, n_methods)
    random_capture = random_baseline or any(m.needs_random for m in chosen)
    p.passes["capture"] = n_images * n_methods * (1 + int(random_capture) + cascade_steps)
    for m in chosen:
        if m.passes is None:
            continue
        models = 2 if random_baseline and m.baseline else 1
        for part, count in m.passes(n_images * n_methods, n_layers, pixels, o).items():
            p.passes[part] = models * count  # a shared part is counted once
    return p


def _as_input(images: Any, info: Any) -> Any:
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
    metrics: str | Sequence[str] | None = None,
    layers: str | Sequence[str] | None = None,
    target: Any = None,
    masks: np.ndarray | None = None,
    *,
    steps: int = 20,
    baseline: str | Sequence[str] = ("zero", "blur"),
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    energy_region: str = "box",
    random_baseline: bool = True,
    cascade: bool = False,
    score: str = "probability",
    perturb_batch: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    info: Any = None,
    progress: bool = False,
    method_options: dict[str, Any] | None = None,
    engine: str = "local",
    ray_actors: int = 1,
    ray_address: str | None = None,
    **options: Any,
) -> Evaluation:
    """Every chosen metric at every chosen layer, for each method, from one capture per method.

    For each batch of ``batch_size`` images and each method: one :func:`layerscope.explain`
    of all layers; each metric of the registry scores all the layers' maps together (the
    perturbation metrics' perturbed inputs ``perturb_batch`` per forward pass); metrics that
    need object masks (the pointing games) are left out, with a warning, without ``masks``.
    With ``random_baseline`` the fully randomised model
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
        metrics: metric names (``"deletion,insertion"``; default: every default metric,
            :func:`~layerscope.evaluate.default_metrics`).
        layers: as :func:`layerscope.explain` (default: every conv layer).
        target: as :func:`layerscope.explain` (default: the top-1 class).
        masks: bool ``(N, H, W)`` object masks for the pointing games.
        batch_size: images captured and scored together (bounds memory).
        info: the model's :class:`~layerscope.info.ModelInfo`.
        progress: show a tqdm bar of the forward passes.
        random_baseline: also score the randomised model's maps.
        cascade: run the cascading randomisation too (one capture per parameterised module).
        steps, baseline: deletion/insertion options (:func:`~layerscope.evaluate.deletion_insertion`).
        fractions, noise: ROAD options (:func:`~layerscope.evaluate.road`).
        energy_region: ``"box"`` (the paper's) or ``"mask"``.
        score: ``"probability"`` or ``"logit"``.
        perturb_batch: perturbed inputs per forward pass.
        seed: the randomisation's and ROAD noise's seed.
        method_options: options for the methods that have them.
        engine: ``"local"`` (this process) or ``"ray"``: the chunks of ``batch_size`` images
            are scored by ``ray_actors`` Ray actors that each hold the model
            (:mod:`layerscope.evaluate.ray_engine`); the same values either way.
        ray_actors: the Ray engine's actors (one CPU each, or one GPU each for a model on a GPU).
        ray_address: the Ray cluster (default: ``RAY_ADDRESS``, else a local Ray started
            for the evaluation and shut down at its end).
        **options: options of metrics registered beyond the built-in ones.

    Returns:
        An :class:`~layerscope.evaluate.result.Evaluation`.
    """
    import torch

    from layerscope.explanation import resolve_target
    from layerscope.info import info_for

    if not isinstance(model, torch.nn.Module):
        raise UsageError("layerscope evaluate needs a PyTorch model (the metrics re-run it on perturbed inputs)")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    ray_engine.check(engine, ray_actors)
    facts = info_for(model, info)
    x = _as_input(images, facts)
    n = int(x.shape[0])
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3 or masks.shape[0] != n:
            raise UsageError(f"masks must be (N, H, W) bool with N = {n}, got {masks.shape}")
    targets = resolve_target(target, facts.class_names)
    if targets is not None and not isinstance(targets, list):
        targets = [targets] * n

    def batches() -> Iterator[tuple[Any, Any, Any]]:
        for s in range(0, n, batch_size):
            e = s + batch_size
            yield x[s:e], None if targets is None else targets[s:e], None if masks is None else masks[s:e]

    return evaluate_batches(
        model, batches(), n, methods, metrics, layers, has_masks=masks is not None, info=facts, progress=progress,
        random_baseline=random_baseline, cascade=cascade, method_options=method_options, steps=steps,
        baseline=baseline, fractions=fractions, noise=noise, energy_region=energy_region, score=score,
        perturb_batch=perturb_batch, seed=seed, engine=engine, ray_actors=ray_actors, ray_address=ray_address,
        **options,
    )  # fmt: skip


def evaluate_batches(
    model: Any,
    batches: Iterable[tuple[Any, Any, Any]],
    n_images: int,
    methods: str | Sequence[str] = "gradcam",
    metrics: str | Sequence[str] | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    has_masks: bool = False,
    info: Any = None,
    progress: bool = False,
    random_baseline: bool = True,
    cascade: bool = False,
    method_options: dict[str, Any] | None = None,
    engine: str = "local",
    ray_actors: int = 1,
    ray_address: str | None = None,
    **options: Any,
) -> Evaluation:
    """:func:`evaluate` over a stream: ``batches`` yields ``(x, targets, masks)`` — a
    preprocessed ``(B, C, H, W)`` batch, its ``B`` targets (or ``None``: the top-1 class) and
    bool ``(B, H, W)`` masks (or ``None``; give ``has_masks=True`` when they come) —,
    ``n_images`` in all; only one batch is held at a time (a generated data set never
    exists whole; with ``engine="ray"``, one per actor in flight, at most two). The batches
    are the chunks the work is split into; the values do not depend on that split. Other
    arguments as :func:`evaluate`."""
    import torch

    from layerscope.info import info_for
    from layerscope.methods import get_method

    ray_engine.check(engine, ray_actors)
    names_given = default_metrics() if metrics is None else metrics
    chosen = [get_metric(m) for m in check_metrics(names_given)]
    known = [*DEFAULT_OPTIONS, *(o for m in chosen for o in m.options)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(unknown_name("evaluate option", unknown[0], known))
    method_list = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if not method_list:
        raise UsageError("no method given")
    for m in method_list:
        get_method(m)
    if not isinstance(model, torch.nn.Module):
        raise UsageError("layerscope evaluate needs a PyTorch model (the metrics re-run it on perturbed inputs)")
    facts = info_for(model, info)
    if not has_masks:
        dropped = [m.name for m in chosen if m.needs_masks]
        if dropped:
            chosen = [m for m in chosen if not m.needs_masks]
            if not chosen:
                raise UsageError("the pointing games need object masks (a data set that has them, e.g. --shapes N)")
            warnings.warn(f"no object masks: {' and '.join(dropped)} left out", stacklevel=2)
    o = {**DEFAULT_OPTIONS, "output": facts.output or "logits", **options}
    opts = dict(method_options or {})
    per_method_opts = {m: {k: v for k, v in opts.items() if k in get_method(m).options} for m in method_list}
    names = [name for name, _ in _resolve(model, layers, facts)]
    need_random = random_baseline or any(m.needs_random for m in chosen)
    cascade_steps = len(sanity.randomisable_modules(model)) if cascade else 0
    stream = iter(batches)
    first = next(stream, None)
    if first is None or n_images < 1:
        raise UsageError("no image given")
    the_plan = plan(
        n_images, len(names), len(method_list), [m.name for m in chosen], int(first[0].shape[-2] * first[0].shape[-1]),
        random_baseline=random_baseline, cascade_steps=cascade_steps, **{k: o[k] for k in known if k in o},
    )  # fmt: skip
    log.info("evaluate: %s%s", the_plan.describe(), "" if engine == "local" else f" on Ray, {ray_actors} actor(s)")
    scorer = Scorer(
        model, names, method_list, chosen, o, facts, per_method_opts, random_baseline, need_random, cascade,
        cascade_steps,
    )  # fmt: skip
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=the_plan.total, desc="evaluate", unit="pass")
    try:
        if engine == "local":
            scorer.ready()
            chunks = [scorer.score(xc, tc, mc, start, bar) for start, (xc, tc, mc) in _numbered(first, stream)]
        else:
            chunks = ray_engine.score_chunks(
                scorer, ((start, *b) for start, b in _numbered(first, stream)), ray_actors, ray_address,
                _advance(bar, the_plan.total, n_images),
            )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    return merge(chunks, scorer, the_plan)


def _numbered(first: tuple[Any, Any, Any], stream: Iterator[tuple[Any, Any, Any]]) -> Iterator[tuple[int, Any]]:
    """``(position of the batch's first image in the run, batch)``, the batches one at a time."""
    start = 0
    for b in itertools.chain([first], stream):
        yield start, b
        start += int(b[0].shape[0])


def _advance(bar: Any, total: int, n_images: int) -> Callable[[Chunk], None]:
    """Advance ``bar`` by a finished chunk's share of the forward passes."""
    done = [0, 0]  # images, passes shown

    def update(chunk: Chunk) -> None:
        if bar is None:
            return
        done[0] += chunk.n
        passes = total * min(done[0], n_images) // max(n_images, 1)
        bar.update(passes - done[1])
        done[1] = passes

    return update


def _resolve(model: Any, layers: Any, facts: Any) -> list[tuple[str, str]]:
    from layerscope.capture import get_adapter

    return get_adapter("torch").resolve_layers(model, layers, facts)
