"""ROAD, RemOve And Debias (Rong et al. 2022): pixels removed most or least relevant first and
replaced by noisy linear imputation; the score as they go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.evaluate import _engine as E
from layerscope.evaluate._registry import Batch, Column, Metric, register

#: ROAD's removal fractions (Rong et al. 2022 report 10 % … 90 %).
ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Noise added to ROAD's imputed pixels (standard deviation, in the model's input units),
#: as the authors' ``NoisyLinearImputer`` and Quantus.
ROAD_NOISE = 0.01

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


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s random draws in a run seeded ``seed``: NumPy's
    ``SeedSequence([seed, index])`` (negative seeds taken modulo 2**64), its first 64-bit word."""
    words = np.random.SeedSequence([int(seed) % 2**64, int(index)]).generate_state(1, np.uint64)
    return int(words[0])


def noise_field(shape: tuple[int, ...], seed: int, index: int) -> Any:
    """ROAD's standard normal noise field of image ``index``: float32 ``shape`` drawn on the
    CPU by a torch generator seeded :func:`image_seed` ``(seed, index)`` — the same numbers
    on every device, for every batch the image is scored in."""
    import torch

    gen = torch.Generator().manual_seed(image_seed(seed, index))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


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
    perturb_batch: int = 256,
    progress: Any = False,
    index: Any = None,
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
        model, x, maps, targets, output, score, perturb_batch, progress: as
            :func:`deletion_insertion`.
        fractions: the removal fractions, each in (0, 1); default 10 %, 20 %, …, 90 %.
        noise: the standard deviation of the imputation noise (0 for none).
        seed: the noise's seed. The noise is one field per image, drawn from ``seed`` and
            the image's index (:func:`noise_field`): the same on a pixel for every map, order
            and fraction (common random numbers: maps, layers, compared on equal terms),
            whatever ``perturb_batch``, however many maps are scored together and however a
            data set is split into batches or over machines.
        index: ``(N,)`` the images' indices in the data set the noise is drawn for (default
            ``0 … N−1``); an evaluation gives each image its position in the whole run.

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
    original = E.run_jobs(n, lambda sl: (ctx.x[sl], idx[sl]), ctx, perturb_batch, bar)
    index = np.arange(n) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
    if index.shape != (n,) or (index < 0).any():
        raise UsageError(f"index must give each of the {n} images a position >= 0, got {index.tolist()}")
    # One noise field per image, drawn from (seed, the image's index): every map, order and
    # fraction of an image gets the same noise on the pixels it removes (maps compared on
    # equal terms), and the numbers do not depend on perturb_batch, on how many maps are
    # scored together or on which batch (or machine) the image is scored in.
    noise_fields = (
        torch.stack([noise_field(tuple(ctx.x.shape[1:]), seed, int(i)) for i in index]).to(dev, ctx.x.dtype)
        if noise > 0
        else None
    )
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
        if noise_fields is not None:
            xb = xb + noise * mask * noise_fields[img]
        return xb, img

    scores, correct = E.run_jobs(len(map_list) * per_map, make, ctx, perturb_batch, bar, predict=True)
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


def _score(batch: Batch) -> dict[str, Any]:
    o = batch.options
    r = road(
        batch.model, batch.x, batch.maps, batch.targets, fractions=o["fractions"], noise=o["noise"], seed=o["seed"],
        index=batch.index, **batch.perturbation_kw(),
    )  # fmt: skip
    return {"road_morf": r.morf.mean(axis=-1), "road_lerf": r.lerf.mean(axis=-1), "road_combined": r.combined}


register(
    Metric(
        "road",
        (
            Column("road_morf", "ROAD MoRF", "lower"),
            Column("road_lerf", "ROAD LeRF", "higher"),
            Column("road_combined", "ROAD combined", "higher"),
        ),
        _score,
        lambda n_images, n_layers, pixels, o: {"ROAD": road_passes(n_images, n_layers, o["fractions"])},
        headline="road_combined",
        order=30,
    )
)
