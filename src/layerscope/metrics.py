"""Scores for explanations: the pointing game and a rank correlation for sanity checks.

Pure numpy: this module imports no framework, at import time or later.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of 1-D linear interpolation with half-pixel centres.

    Output pixel ``i`` samples the input at ``(i + 0.5) * n_in / n_out - 0.5``, clamped to
    ``[0, n_in - 1]``: the convention of ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)`` and of OpenCV's ``INTER_LINEAR`` (when
    enlarging).
    """
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    return m


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize maps bilinearly, as ``torch.nn.functional.interpolate(align_corners=False)``.

    Bilinear interpolation is separable, so each map is ``Wy @ map @ Wx.T`` with the 1-D
    interpolation matrices; the result matches torch's to float rounding.

    Args:
        maps: ``(N, h, w)`` array.
        size: the output ``(H, W)``.

    Returns:
        ``(N, H, W)`` float64 array.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be shaped (N, h, w), got shape {maps.shape}")
    wy = _bilinear_matrix(maps.shape[1], int(size[0]))
    wx = _bilinear_matrix(maps.shape[2], int(size[1]))
    return wy @ maps @ wx.T


def _pointing_pixel(up: np.ndarray) -> tuple[int, int] | None:
    """The maximum pixel of one map, or ``None`` for a flat or non-finite map.

    Ties are broken by taking, among the maximal pixels, the one nearest their centroid: an
    enlarged map is flat over the border band (the interpolation clamps there), and the
    first maximal pixel would always be a corner of that plateau.
    """
    if not np.all(np.isfinite(up)):
        return None
    top = up.max()
    if top <= up.min():
        return None
    ys, xs = np.nonzero(up == top)
    if len(ys) == 1:
        return int(ys[0]), int(xs[0])
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    k = int(np.argmin(d2))
    return int(ys[k]), int(xs[k])


def pointing_game(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
    ECCV 2016), without tolerance: does each map's maximum fall on the object?

    Each map is enlarged to its mask's size by bilinear interpolation with
    ``align_corners=False`` semantics (:func:`upsample_bilinear`, numpy, equal to torch's
    ``interpolate`` to rounding); its maximum pixel is a hit when the mask is true there.
    Among tied maximal pixels the one nearest their centroid is taken (see
    ``_pointing_pixel``). A flat map (all values equal, e.g. all zero) points nowhere and
    is a miss, as is a map holding NaN or infinity.

    Args:
        cams: float ``(N, h, w)`` maps at any resolution.
        masks: bool ``(N, H, W)`` object masks.

    Returns:
        bool ``(N,)``: ``True`` where the map's maximum lies inside the mask.
    """
    cams = np.asarray(cams)
    masks = np.asarray(masks)
    if cams.ndim != 3 or masks.ndim != 3:
        raise ValueError(f"cams must be (N, h, w) and masks (N, H, W); got {cams.shape} and {masks.shape}")
    if cams.shape[0] != masks.shape[0]:
        raise ValueError(f"{cams.shape[0]} maps but {masks.shape[0]} masks")
    if masks.dtype != bool:
        raise ValueError(f"masks must be boolean, got dtype {masks.dtype}")
    if min(cams.shape[1:]) < 1:
        raise ValueError(f"maps must not be empty, got shape {cams.shape}")
    hits = np.zeros(cams.shape[0], dtype=bool)
    if cams.shape[0] == 0:
        return hits
    with np.errstate(invalid="ignore", over="ignore"):
        up = upsample_bilinear(cams, masks.shape[1:])
    for i in range(cams.shape[0]):
        pixel = _pointing_pixel(up[i])
        hits[i] = pixel is not None and bool(masks[i][pixel])
    return hits


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1…n of a 1-D array, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each group of ties
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation between ``a[i]`` and ``b[i]``, for each sample ``i``.

    :math:`\\rho = \\operatorname{corr}(\\operatorname{rank}(a_i), \\operatorname{rank}(b_i))`,
    the Pearson correlation of the ranks, with tied values given the mean of their ranks
    (as ``scipy.stats.spearmanr``). Used for the model-randomisation sanity check
    (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the maps of a
    trained model and of the same model with random weights should not be alike.

    Args:
        a: ``(N, ...)`` array; each sample is flattened.
        b: array of the same shape.

    Returns:
        float64 ``(N,)`` in ``[-1, 1]``; NaN where a sample of ``a`` or ``b`` is constant
        (the correlation is undefined there) or holds NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 2:
        raise ValueError(f"expected (N, ...) arrays of N samples, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.isnan(a[i]).any() or np.isnan(b[i]).any():
            continue
        ra = _average_ranks(a[i])
        rb = _average_ranks(b[i])
        ra -= ra.mean()
        rb -= rb.mean()
        denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
        if denom > 0:
            out[i] = float(np.clip((ra * rb).sum() / denom, -1.0, 1.0))
    return out
