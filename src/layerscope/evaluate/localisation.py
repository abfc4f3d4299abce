"""Localisation metrics, where the object's mask (or box) is known: the pointing game and
the energy-based pointing game. Pure numpy: no framework is imported.
"""

from __future__ import annotations

import numpy as np

from layerscope.evaluate._registry import Batch, Column, Metric, register
from layerscope.resize import resize_bilinear


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize maps bilinearly, as ``torch.nn.functional.interpolate(align_corners=False)``
    (:func:`layerscope.resize.resize_bilinear`), in float64.

    Args:
        maps: ``(N, h, w)`` array.
        size: the output ``(H, W)``.

    Returns:
        ``(N, H, W)`` float64 array.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be shaped (N, h, w), got shape {maps.shape}")
    return np.asarray(resize_bilinear(maps, (int(size[0]), int(size[1]))), dtype=np.float64)


def _check(cams: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    return cams, masks


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
    cams, masks = _check(cams, masks)
    hits = np.zeros(cams.shape[0], dtype=bool)
    if cams.shape[0] == 0:
        return hits
    with np.errstate(invalid="ignore", over="ignore"):
        up = upsample_bilinear(cams, masks.shape[1:])
    n, h, w = up.shape
    flat = up.reshape(n, h * w)
    k = np.argmax(flat, axis=1)
    top = flat[np.arange(n), k]
    with np.errstate(invalid="ignore"):
        unique = (flat == top[:, None]).sum(axis=1) == 1
    # one maximal pixel (the common case): read it off for the whole batch at once
    easy = unique & np.isfinite(flat).all(axis=1) & (top > flat.min(axis=1))
    hits[easy] = masks.reshape(n, h * w)[easy, k[easy]]
    for i in np.flatnonzero(~easy):  # ties, flat or non-finite maps: one at a time
        pixel = _pointing_pixel(up[i])
        hits[i] = pixel is not None and bool(masks[i][pixel])
    return hits


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Each mask's bounding box, filled: bool ``(N, H, W)`` (an empty mask stays empty)."""
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros_like(masks)
    for i, m in enumerate(masks):
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(rows):
            out[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return out


def energy_pointing_game(cams: np.ndarray, masks: np.ndarray, region: str = "box") -> np.ndarray:
    """The energy-based pointing game (Wang et al., "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks", CVPR Workshops 2020, §4.2): the share
    of a map's energy that falls on the object,
    :math:`\\sum_{(i,j) \\in \\mathrm{box}} L_{ij} / \\sum_{(i,j)} L_{ij}`.

    The map is enlarged to the mask's size as in :func:`pointing_game`; negative values
    (there are none after a CAM's ReLU) are clipped to 0. The paper uses the object's
    bounding box (``region="box"``, the box of each mask); ``region="mask"`` uses the mask
    itself, stricter for shapes that fill their box poorly. A map with no energy (all zero)
    or a non-finite one scores 0.

    Args:
        cams: float ``(N, h, w)`` maps at any resolution.
        masks: bool ``(N, H, W)`` object masks.
        region: ``"box"`` or ``"mask"``.

    Returns:
        float64 ``(N,)`` in [0, 1] (higher is better; a uniform map scores the region's area).
    """
    cams, masks = _check(cams, masks)
    if region not in ("box", "mask"):
        raise ValueError(f"region must be 'box' or 'mask', not {region!r}")
    inside = boxes_from_masks(masks) if region == "box" else masks
    out = np.zeros(cams.shape[0])
    if cams.shape[0] == 0:
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        up = np.clip(upsample_bilinear(cams, masks.shape[1:]), 0.0, None)
    for i in range(cams.shape[0]):
        total = up[i].sum()
        if np.isfinite(total) and total > 0:
            out[i] = float(up[i][inside[i]].sum() / total)
    return out


# --------------------------------------------------------------------------- the suite's entries


def _pointing(batch: Batch) -> dict[str, list[np.ndarray]]:
    return {"pointing_game": [pointing_game(m, batch.masks).astype(np.float64) for m in batch.maps]}


def _energy(batch: Batch) -> dict[str, list[np.ndarray]]:
    region = batch.options["energy_region"]
    return {"energy_pointing_game": [energy_pointing_game(m, batch.masks, region) for m in batch.maps]}


register(Metric("pointing", (Column("pointing_game", "Pointing game"),), _pointing, needs_masks=True, order=50))
register(
    Metric("energy", (Column("energy_pointing_game", "Energy pointing game"),), _energy, needs_masks=True, order=60)
)
