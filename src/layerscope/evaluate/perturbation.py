"""Faithfulness metrics that perturb the input and re-run the model: deletion and insertion
(RISE), ROAD, and Average Drop / Average Increase.

Each is a pure function of a torch model, a preprocessed batch ``x`` ``(N, C, H, W)``, the
maps to judge and the explained classes. The maps may be one ``(N, h, w)`` array at any
resolution (a layer's own) or a list of them (every layer of a tour, several methods): the
perturbed inputs of all of them go through the model together, ``batch_size`` per forward
pass, on the model's device. Maps are enlarged to the input's size with the package's one
bilinear resize (:mod:`layerscope.resize`, half-pixel centres).

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
from layerscope.resize import resize_bilinear

#: Substrates for deletion and insertion.
BASELINES = ("blur", "mean", "zero")
#: RISE's blur (Petsiuk et al.'s code): a Gaussian of 11×11 taps and σ = 5 pixels.
BLUR_SIZE, BLUR_SIGMA = 11, 5.0
#: ROAD's removal fractions (Rong et al. 2022 report 10 % … 90 %).
ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Noise added to ROAD's imputed pixels (standard deviation, in the model's input units),
#: as the authors' ``NoisyLinearImputer`` and Quantus.
ROAD_NOISE = 0.01


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


def _baseline_pair(baseline: str | Sequence[str]) -> tuple[str, str]:
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
    batch_size: int = 256,
    progress: Any = False,
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
        batch_size: perturbed inputs per forward pass.
        progress: ``True`` for a tqdm bar, or a tqdm bar to advance.

    Returns:
        A :class:`DeletionInsertion`.
    """
    import torch

    ctx = E.make_context(model, x, targets, output, score)
    map_list, single = E.as_map_list(maps, ctx.n)
    b_del, b_ins = _baseline_pair(baseline)
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
    end_scores = E.run_jobs(len(ends), lambda sl: (ends[sl], end_idx[sl]), ctx, batch_size, bar).reshape(-1, n)
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

    inner_scores = E.run_jobs(m_count * per_map, make, ctx, batch_size, bar) if inner else np.zeros(0, np.float32)
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


# --------------------------------------------------------------------------- Average Drop / Increase


@dataclass
class DropIncrease:
    """Average Drop and Average Increase, per image (average them over images yourself, or
    read :attr:`average_drop` and :attr:`average_increase`).

    Attributes:
        drop: ``([M,] N)`` ``max(0, Y − O) / Y`` per image (a fraction; the paper's % is × 100).
        increase: ``([M,] N)`` bool, ``O > Y``.
        original: ``(N,)`` ``Y``, the score of the whole image.
        masked: ``([M,] N)`` ``O``, the score of the image times the map.
    """

    drop: np.ndarray
    increase: np.ndarray
    original: np.ndarray
    masked: np.ndarray

    @property
    def average_drop(self) -> np.ndarray:
        """Mean drop over images (lower is better)."""
        return self.drop.mean(axis=-1)

    @property
    def average_increase(self) -> np.ndarray:
        """Share of images whose score increases (higher is better)."""
        return self.increase.mean(axis=-1)


def average_drop_increase(
    model: Any,
    x: Any,
    maps: Any,
    targets: Any,
    *,
    output: str | None = "logits",
    score: str = "probability",
    batch_size: int = 256,
    progress: Any = False,
) -> DropIncrease:
    """Average Drop and Average Increase in confidence (Chattopadhay, Sarkar, Howlader and
    Balasubramanian, "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks", WACV 2018).

    The image is multiplied by its map, min-max normalised to [0, 1] at the map's own
    resolution (``(m − min) / (max − min + 1e-8)``) and enlarged to the input: the
    "explanation map" :math:`E = L^c \\circ I`. With :math:`Y` the target's score on the
    image and :math:`O` on :math:`E`, Average Drop is
    :math:`\\frac1N\\sum_i \\max(0, Y_i - O_i) / Y_i` (× 100 in the paper; lower is better)
    and Average Increase the share of images with :math:`O_i > Y_i` (higher is better).
    The product is taken in the model's input space and ``Y + 1e-7`` divides, as torchcam's
    ``ClassificationMetric``.

    Cost: one pass per image, plus one per image and map.

    Args:
        model, x, maps, targets, output, score, batch_size, progress: as
            :func:`deletion_insertion`.

    Returns:
        A :class:`DropIncrease`.
    """
    import torch

    ctx = E.make_context(model, x, targets, output, score)
    map_list, single = E.as_map_list(maps, ctx.n)
    n, size, dev = ctx.n, ctx.size, ctx.x.device
    bar = E.progress_bar(n * (1 + len(map_list)), "average drop/increase", progress)
    idx = torch.arange(n, device=dev)
    original = E.run_jobs(n, lambda sl: (ctx.x[sl], idx[sl]), ctx, batch_size, bar)

    def make(sl: slice) -> tuple[Any, Any]:
        jobs = np.arange(sl.start, sl.stop)
        parts = []
        for m in np.unique(jobs // n):
            img = jobs[jobs // n == m] % n
            a = torch.as_tensor(map_list[m][img], device=dev, dtype=torch.float32)
            a = a - a.amin(dim=(1, 2), keepdim=True)
            a = a / (a.amax(dim=(1, 2), keepdim=True) + 1e-8)
            up = resize_bilinear(a, size)
            it = torch.as_tensor(img, device=dev)
            parts.append((up.unsqueeze(1) * ctx.x[it], it))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    masked = E.run_jobs(n * len(map_list), make, ctx, batch_size, bar).reshape(len(map_list), n)
    E.close_bar(bar, progress)
    y = original.astype(np.float64)
    drop = np.maximum(0.0, y - masked) / (y + 1e-7)
    increase = masked > original
    if single:
        return DropIncrease(drop[0], increase[0], original, masked[0])
    return DropIncrease(drop, increase, original, masked)


# --------------------------------------------------------------------------- ROAD

#: Neighbour weights of ROAD's linear imputation: 1/6 for the four direct neighbours, 1/12
#: for the four diagonal ones (Rong et al. 2022, their ``NoisyLinearImputer``).
_W_DIRECT, _W_DIAGONAL = 1.0 / 6.0, 1.0 / 12.0


#: The eight neighbour offsets (row, column) and their weights.
_NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (0, 1, _W_DIRECT),
    (0, -1, _W_DIRECT),
    (1, 0, _W_DIRECT),
    (-1, 0, _W_DIRECT),
    (1, 1, _W_DIAGONAL),
    (1, -1, _W_DIAGONAL),
    (-1, 1, _W_DIAGONAL),
    (-1, -1, _W_DIAGONAL),
)


def _impute_one(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """:func:`linear_imputation` of one ``(C, H, W)`` float64 image (sparse direct solve)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    c, h, w = x.shape
    ids = np.flatnonzero(removed.reshape(-1))
    n = len(ids)
    if n == 0:
        return x
    if n == h * w:
        raise UsageError("cannot impute an image whose every pixel is removed")
    var = np.full(h * w, -1)
    var[ids] = np.arange(n)
    r, col = np.divmod(ids, w)
    xf = x.reshape(c, -1)
    diag = np.zeros(n)
    b = np.zeros((n, c))
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    for dy, dx, wt in _NEIGHBOURS:
        rr, cc = r + dy, col + dx
        inside = np.flatnonzero((rr >= 0) & (rr < h) & (cc >= 0) & (cc < w))
        q = rr[inside] * w + cc[inside]
        diag[inside] += wt
        unknown = var[q] >= 0
        rows.append(inside[unknown])
        cols.append(var[q[unknown]])
        vals.append(np.full(int(unknown.sum()), -wt))
        b[inside[~unknown]] += wt * xf[:, q[~unknown]].T  # one neighbour per offset: no repeats
    a = sp.csc_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = np.asarray(spsolve(a, b)).reshape(n, c)
    out = xf.copy()
    out[:, ids] = sol.T
    return out.reshape(c, h, w)


def linear_imputation(x: Any, removed: Any) -> Any:
    """ROAD's linear imputation, without its noise: every removed pixel becomes the weighted
    mean of its in-image neighbours (weight 1/6 direct, 1/12 diagonal), known or imputed.

    That is the sparse linear system of Rong et al. (2022) — for each removed pixel ``p``,
    :math:`\\sum_q w_{pq} (x_p - x_q) = 0` over its neighbours ``q`` inside the image —
    solved exactly, each image on its own, all channels at once, by a sparse direct solver
    (SciPy's SuperLU) on the CPU, as the authors' code and Quantus do; the result goes back
    to ``x``'s device. It is ROAD's dominant cost (about 0.1 s per 96×96 image on one core).

    Args:
        x: float ``(B, C, H, W)`` tensor (or array).
        removed: bool ``(B, H, W)`` (or ``(B, 1, H, W)``) pixels to impute.

    Returns:
        ``x`` with the removed pixels imputed (a tensor like ``x``; an array for an array).
    """
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        raise UsageError("ROAD's imputation needs SciPy: pip install scipy") from None
    is_tensor = hasattr(x, "detach")
    xa = np.asarray(x.detach().cpu().numpy() if is_tensor else x, dtype=np.float64)
    ra = np.asarray(removed.detach().cpu().numpy() if hasattr(removed, "detach") else removed, dtype=bool)
    ra = ra.reshape(xa.shape[0], *xa.shape[-2:])
    out = np.stack([_impute_one(xa[i], ra[i]) for i in range(xa.shape[0])]) if len(xa) else xa
    if not is_tensor:
        return out.astype(np.asarray(x).dtype)
    import torch

    return torch.as_tensor(out, dtype=x.dtype, device=x.device)


def road_passes(n_images: int, n_maps: int, fractions: Sequence[float] = ROAD_FRACTIONS) -> int:
    """Forward passes :func:`road` makes: the original once per image, then one per image,
    map, order (MoRF, LeRF) and fraction."""
    return n_images * (1 + 2 * len(fractions) * n_maps)


@dataclass
class Road:
    """ROAD curves.

    Attributes:
        fractions: ``(P,)`` the fractions of pixels removed.
        morf: ``([M,] N, P)`` the score with the most relevant pixels removed first.
        lerf: ``([M,] N, P)`` the score with the least relevant pixels removed first.
        morf_correct: ``([M,] N, P)`` bool, the model still predicts the target (MoRF).
        lerf_correct: ``([M,] N, P)`` bool, likewise for LeRF.
        original: ``(N,)`` the score of the whole image.
    """

    fractions: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    morf_correct: np.ndarray
    lerf_correct: np.ndarray
    original: np.ndarray

    @property
    def combined(self) -> np.ndarray:
        """``([M,] N)`` mean over fractions of ``(LeRF − MoRF) / 2`` (higher is better)."""
        return ((self.lerf - self.morf) / 2.0).mean(axis=-1)


def road(
    model: Any,
    x: Any,
    maps: Any,
    targets: Any,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    output: str | None = "logits",
    score: str = "probability",
    batch_size: int = 256,
    progress: Any = False,
) -> Road:
    """ROAD, RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and
    Efficient Evaluation Strategy for Attribution Methods", ICML 2022), without retraining.

    A fraction ``p`` of the pixels is removed — the most relevant first (MoRF) or the least
    relevant first (LeRF), ranked by the enlarged map as in :func:`deletion_insertion` —
    and replaced by *noisy linear imputation*: each removed pixel the weighted mean of its
    neighbours (:func:`linear_imputation`) plus Gaussian noise of standard deviation
    ``noise``, which keeps the removal's shape from leaking the ranking to the model. The
    number removed is ``floor(p · H · W)`` (as Quantus). Faithful maps make the MoRF score
    fall fast and the LeRF score stay high. :attr:`Road.combined` is the mean over ``p`` of
    ``(LeRF − MoRF) / 2``, the combination pytorch-grad-cam's ``ROADCombined`` uses (the
    paper reports MoRF and LeRF apart); both curves are also kept as accuracy (the paper's
    measure: does the model still predict the target?).

    Cost: one pass per image, plus ``2 · len(fractions)`` per image and map, and as many
    imputations (sparse solves on the CPU: the dominant cost).

    Args:
        model, x, maps, targets, output, score, batch_size, progress: as
            :func:`deletion_insertion`.
        fractions: the removal fractions, each in (0, 1); default 10 %, 20 %, …, 90 %.
        noise: the standard deviation of the imputation noise (0 for none).
        seed: the noise generator's seed (the noise depends on it and on ``batch_size``).

    Returns:
        A :class:`Road`.
    """
    import torch

    ctx = E.make_context(model, x, targets, output, score)
    fr = E.check_fractions(fractions, "fractions")
    map_list, single = E.as_map_list(maps, ctx.n)
    n, (h, w), dev = ctx.n, ctx.size, ctx.x.device
    pixels = h * w
    removed_counts = [int(pixels * p) for p in fr]
    bar = E.progress_bar(road_passes(n, len(map_list), fr), "ROAD", progress)
    idx = torch.arange(n, device=dev)
    original = E.run_jobs(n, lambda sl: (ctx.x[sl], idx[sl]), ctx, batch_size, bar)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))
    per_map = n * 2 * len(fr)
    img_of = np.repeat(np.arange(n), 2 * len(fr))
    morf_of = np.tile(np.repeat([True, False], len(fr)), n)
    count_of = np.tile(np.asarray(removed_counts * 2), n)
    cache: dict[int, Any] = {}

    def make(sl: slice) -> tuple[Any, Any]:
        jobs = np.arange(sl.start, sl.stop)
        m_of, j = jobs // per_map, jobs % per_map
        removed, imgs = [], []
        for m in np.unique(m_of):
            if m not in cache:
                cache.clear()
                cache[m] = E.ranks(map_list[m], (h, w), dev)
            sel = j[m_of == m]
            img = torch.as_tensor(img_of[sel], device=dev)
            cnt = torch.as_tensor(count_of[sel], device=dev).unsqueeze(1)
            rk = cache[m][img]
            morf = torch.as_tensor(morf_of[sel], device=dev).unsqueeze(1)
            removed.append(torch.where(morf, rk < cnt, rk >= pixels - cnt))
            imgs.append(img)
        img = torch.cat(imgs)
        mask = torch.cat(removed).reshape(-1, 1, h, w)
        xb = linear_imputation(ctx.x[img], mask)
        if noise > 0:
            xb = xb + noise * mask * torch.randn(xb.shape, generator=gen, device=dev, dtype=xb.dtype)
        return xb, img

    scores, correct = E.run_jobs(len(map_list) * per_map, make, ctx, batch_size, bar, predict=True)
    E.close_bar(bar, progress)
    scores = scores.reshape(len(map_list), n, 2, len(fr))
    correct = correct.reshape(len(map_list), n, 2, len(fr))
    out = Road(
        np.asarray(fr), scores[:, :, 0], scores[:, :, 1], correct[:, :, 0], correct[:, :, 1], np.asarray(original)
    )
    if single:
        out.morf, out.lerf = out.morf[0], out.lerf[0]
        out.morf_correct, out.lerf_correct = out.morf_correct[0], out.lerf_correct[0]
    return out
