"""Deletion and insertion (RISE): pixels removed from, or restored to, the image in the order
of the map; the area under the score's curve. The substrates (:func:`baseline_input`) live
here too.

A pure function of a torch model, a preprocessed batch ``x`` ``(N, C, H, W)``, the maps to
judge and the explained classes. The maps may be one ``(N, h, w)`` array at any resolution
(a layer's own) or a list of them (every layer of a tour): the perturbed inputs of all of
them go through the model together, ``perturb_batch`` per forward pass, on the model's
device. Maps are enlarged to the input's size with the package's one bilinear resize
(:mod:`layerscope.resize`, half-pixel centres).

The score is the target's softmax probability (``score="probability"``, the papers'
choice; a model whose output already is a probability is used as it is), or the raw output
(``score="logit"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.evaluate import _engine as E
from layerscope.evaluate._registry import Batch, Column, Metric, register

#: Substrates for deletion and insertion.
BASELINES = ("blur", "mean", "zero")
#: RISE's blur (Petsiuk et al.'s code): a Gaussian of 11×11 taps and σ = 5 pixels.
BLUR_SIZE, BLUR_SIGMA = 11, 5.0


# --------------------------------------------------------------------------- baselines


def baseline_input(x: Any, kind: str) -> Any:
    """The substrate a deletion/insertion curve moves towards or starts from.

    ``"zero"``: zeros in the model's input space (with mean/std normalisation: the data
    set's mean colour), RISE's deletion substrate; ``"mean"``: each image's own mean colour
    per channel; ``"blur"``: each image blurred by a Gaussian (11 taps, σ = 5, zero padding
    as RISE's code), RISE's insertion substrate.

    Args:
        x: float ``(N, C, H, W)`` tensor.
        kind: one of :data:`BASELINES`.
    """
    import torch

    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if kind == "blur":
        t = torch.arange(BLUR_SIZE, dtype=torch.float32, device=x.device) - BLUR_SIZE // 2
        g = torch.exp(-(t**2) / (2 * BLUR_SIGMA**2))
        k = torch.outer(g, g)
        k = (k / k.sum()).expand(x.shape[1], 1, BLUR_SIZE, BLUR_SIZE).contiguous()
        return torch.nn.functional.conv2d(x, k, padding=BLUR_SIZE // 2, groups=x.shape[1])
    raise UsageError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")


def baseline_pair(baseline: str | Sequence[str]) -> tuple[str, str]:
    pair = (baseline, baseline) if isinstance(baseline, str) else tuple(baseline)
    if len(pair) != 2:
        raise UsageError(f"baseline must be a name or a (deletion, insertion) pair, got {baseline!r}")
    for b in pair:
        if b not in BASELINES:
            raise UsageError(f"unknown baseline {b!r}; expected one of {', '.join(BASELINES)}")
    return pair[0], pair[1]


# --------------------------------------------------------------------------- deletion / insertion


def curve_counts(pixels: int, steps: int) -> list[int]:
    """Pixels perturbed at each point of a deletion/insertion curve.

    ``ceil(pixels / steps)`` more pixels per step (RISE's ``step``), from 0 to all of them:
    ``[0, s, 2s, …, pixels]``, at most ``steps + 1`` points (the last step may be shorter).
    """
    if steps < 1:
        raise UsageError(f"steps must be at least 1, not {steps}")
    step = -(-pixels // steps)
    return [*range(0, pixels, step), pixels]


def deletion_insertion_passes(n_images: int, n_maps: int, pixels: int, steps: int, same_baseline: bool) -> int:
    """Forward passes :func:`deletion_insertion` makes: per image, the original and the
    all-baseline input(s) once, then each map's inner points of both curves."""
    inner = len(curve_counts(pixels, steps)) - 2
    return n_images * (1 + (1 if same_baseline else 2) + 2 * inner * n_maps)


@dataclass
class DeletionInsertion:
    """Deletion and insertion curves and their areas.

    Arrays have a leading map axis ``M`` when a list of maps was given, none otherwise.

    Attributes:
        deletion: ``([M,] N)`` area under the deletion curve (lower is better).
        insertion: ``([M,] N)`` area under the insertion curve (higher is better).
        fractions: ``(K,)`` fraction of the pixels perturbed at each curve point.
        deletion_curves: ``([M,] N, K)`` the score as the most relevant pixels are removed.
        insertion_curves: ``([M,] N, K)`` the score as they are restored.
    """

    deletion: np.ndarray
    insertion: np.ndarray
    fractions: np.ndarray
    deletion_curves: np.ndarray
    insertion_curves: np.ndarray


def deletion_insertion(
    model: Any,
    x: Any,
    maps: Any,
    targets: Any,
    *,
    steps: int = 20,
    baseline: str | Sequence[str] = ("zero", "blur"),
    output: str | None = "logits",
    score: str = "probability",
    perturb_batch: int = 256,
    progress: Any = False,
    scorer: Any = None,
) -> DeletionInsertion:
    """Deletion and insertion AUC (Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling
    for Explanation of Black-box Models", BMVC 2018).

    Pixels are ranked by the map (enlarged to the input, descending, ties in raster order).
    *Deletion* replaces the most relevant pixels, ``ceil(H·W / steps)`` more at each step,
    by a baseline and records the target's score; a faithful map makes it fall fast (low
    area). *Insertion* starts from the baseline and restores the most relevant pixels
    first; the score should rise fast (high area). A pixel is perturbed in every channel.
    The area is the trapezoidal integral of the score over the fraction of pixels
    perturbed, :math:`\\mathrm{AUC} = \\sum_k \\tfrac12 (s_k + s_{k+1})(f_{k+1} - f_k)`
    on :math:`f \\in [0, 1]` — the convention of torchcam's ``DeletionInsertionMetric``.

    Cost: per image one pass for the original, one for each all-baseline input (shared
    by every map), and ``2 · (K − 2)`` per map, ``K`` the number of curve points
    (``steps + 1`` at most): 20 steps for 13 layers is 13 × 38 + 2 passes per image.

    Args:
        model: a torch model returning ``(N, classes)``.
        x: the preprocessed batch ``(N, C, H, W)`` (a tensor or an array).
        maps: ``(N, h, w)`` maps, or a list of them.
        targets: ``(N,)`` the explained class of each image.
        steps: curve intervals (RISE's ``H·W / step``).
        baseline: ``"zero"``, ``"mean"`` or ``"blur"`` (see :func:`baseline_input`) for both
            curves, or a ``(deletion, insertion)`` pair; default RISE's ``("zero", "blur")``.
        output: what the model returns, ``"logits"`` or ``"probabilities"``.
        score: ``"probability"`` (softmax of the target) or ``"logit"``.
        perturb_batch: perturbed inputs per forward pass.
        progress: ``True`` for a tqdm bar, or a tqdm bar to advance.
        scorer: ``scorer(model_output, image_index (B,)) -> (B,)``: the score measured
            instead of the target class's (e.g. a detection's,
            :func:`layerscope.evaluate.boxes.detection_scorer`); ``targets`` is then unused.

    Returns:
        A :class:`DeletionInsertion`.
    """
    import torch

    ctx = E.make_context(model, x, targets, output, score, scorer)
    map_list, single = E.as_map_list(maps, ctx.n)
    b_del, b_ins = baseline_pair(baseline)
    n, (h, w) = ctx.n, ctx.size
    pixels = h * w
    counts = curve_counts(pixels, steps)
    k = len(counts)
    dev = ctx.x.device
    with torch.no_grad():
        base_d = baseline_input(ctx.x, b_del)
        base_i = base_d if b_ins == b_del else baseline_input(ctx.x, b_ins)
    bar = E.progress_bar(
        deletion_insertion_passes(n, len(map_list), pixels, steps, b_del == b_ins), "deletion/insertion", progress
    )
    idx = torch.arange(n, device=dev)
    # The end points: the original image, and the all-baseline image(s) (shared by every map).
    ends = torch.cat([ctx.x, base_d] if b_ins == b_del else [ctx.x, base_d, base_i])
    end_idx = idx.repeat(ends.shape[0] // n)
    end_scores = E.run_jobs(len(ends), lambda sl: (ends[sl], end_idx[sl]), ctx, perturb_batch, bar).reshape(-1, n)
    original, all_deleted = end_scores[0], end_scores[1]
    all_baseline_ins = end_scores[-1]

    inner = counts[1:-1]
    m_count = len(map_list)
    # Jobs: (map, image, curve, point) with the map outermost, so one map's ranks at a time.
    per_map = n * 2 * len(inner)
    img_of = np.repeat(np.arange(n), 2 * len(inner))
    curve_of = np.tile(np.repeat([0, 1], len(inner)), n)
    count_of = np.tile(np.asarray(inner * 2), n)
    xf = ctx.x.flatten(2)
    bdf, bif = base_d.flatten(2), base_i.flatten(2)
    cache: dict[int, Any] = {}

    def make(sl: slice) -> tuple[Any, Any]:
        jobs = np.arange(sl.start, sl.stop)
        m_of = jobs // per_map
        j = jobs % per_map
        rows = []
        for m in np.unique(m_of):
            if m not in cache:
                cache.clear()
                cache[m] = E.ranks(map_list[m], (h, w), dev)
            sel = j[m_of == m]
            img = torch.as_tensor(img_of[sel], device=dev)
            cnt = torch.as_tensor(count_of[sel], device=dev)
            relevant = cache[m][img] < cnt.unsqueeze(1)
            deleting = torch.as_tensor(curve_of[sel] == 0, device=dev).unsqueeze(1)
            # Deletion: the relevant pixels from the baseline; insertion: only they from x.
            from_x = torch.where(deleting, ~relevant, relevant).unsqueeze(1)
            base = torch.where(deleting.unsqueeze(1), bdf[img], bif[img])
            rows.append((torch.where(from_x, xf[img], base).reshape(-1, *ctx.x.shape[1:]), img))
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])

    inner_scores = E.run_jobs(m_count * per_map, make, ctx, perturb_batch, bar) if inner else np.zeros(0, np.float32)
    E.close_bar(bar, progress)
    inner_scores = inner_scores.reshape(m_count, n, 2, len(inner))
    del_curves = np.empty((m_count, n, k), np.float32)
    ins_curves = np.empty((m_count, n, k), np.float32)
    del_curves[:, :, 0], del_curves[:, :, -1] = original, all_deleted
    ins_curves[:, :, 0], ins_curves[:, :, -1] = all_baseline_ins, original
    del_curves[:, :, 1:-1] = inner_scores[:, :, 0]
    ins_curves[:, :, 1:-1] = inner_scores[:, :, 1]
    fractions = np.asarray(counts, np.float64) / pixels
    d_auc = np.trapezoid(del_curves.astype(np.float64), fractions, axis=-1)
    i_auc = np.trapezoid(ins_curves.astype(np.float64), fractions, axis=-1)
    if single:
        return DeletionInsertion(d_auc[0], i_auc[0], fractions, del_curves[0], ins_curves[0])
    return DeletionInsertion(d_auc, i_auc, fractions, del_curves, ins_curves)


# --------------------------------------------------------------------------- the suite's entries


def _shared_run(batch: Batch) -> DeletionInsertion:
    o = batch.options
    return batch.shared(
        "deletion_insertion",
        lambda: deletion_insertion(
            batch.model, batch.x, batch.maps, batch.targets, steps=o["steps"], baseline=o["baseline"],
            **batch.perturbation_kw(),
        ),
    )  # fmt: skip


def _passes(n_images: int, n_layers: int, pixels: int, o: dict[str, Any]) -> dict[str, int]:
    b = baseline_pair(o["baseline"])
    return {"deletion/insertion": deletion_insertion_passes(n_images, n_layers, pixels, o["steps"], b[0] == b[1])}


register(
    Metric(
        "deletion",
        (Column("deletion_auc", "Deletion AUC", "lower"),),
        lambda batch: {"deletion_auc": _shared_run(batch).deletion},
        _passes,
        order=10,
    )
)
register(
    Metric(
        "insertion",
        (Column("insertion_auc", "Insertion AUC", "higher"),),
        lambda batch: {"insertion_auc": _shared_run(batch).insertion},
        _passes,
        order=20,
    )
)
