"""Scaling maps to [0, 1] for colouring, and deciding when a map is flat.

A map is *flat* when its range cannot be told apart from zero at its own scale: the range is
at most a few float32 steps of the map's magnitude (``FLAT_RTOL`` × max |value|), or below
float32's smallest normal number, or not finite. The test is relative, so a confident
softmax model whose maps are ~1e-18 with real structure is not flat, while a constant map
with float32 rounding noise is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from layerscope.errors import UsageError

#: A range at most this many float32 epsilons of the map's magnitude is flat.
FLAT_RTOL = float(8 * np.finfo(np.float32).eps)
#: Below float32's smallest normal number a range is not resolved at all.
FLAT_ATOL = float(np.finfo(np.float32).tiny)


def is_flat(lo: float, hi: float) -> bool:
    """Whether the range ``[lo, hi]`` is flat (see the module)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return True
    span = hi - lo
    return bool(span <= FLAT_ATOL or span <= FLAT_RTOL * max(abs(lo), abs(hi)))


def flat_mask(cams: np.ndarray) -> np.ndarray:
    """``bool (N,)``: which of the maps ``(N, ...)`` are flat (see the module)."""
    a = np.asarray(cams)
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    if a.shape[1] == 0:
        return np.ones(a.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):
        lo = a.min(axis=1).astype(np.float64)
        hi = a.max(axis=1).astype(np.float64)
    return np.array([is_flat(float(x), float(y)) for x, y in zip(lo, hi, strict=True)], dtype=bool)


def map_range(cam: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values of ``cam`` (``(0, 0)`` when there are none)."""
    a = np.asarray(cam)
    finite = a[np.isfinite(a)] if not np.isfinite(a).all() else a
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def normalise(cam: np.ndarray, lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, bool]:
    """Min-max scale to [0, 1] (over ``cam`` or the given range).

    Returns:
        The scaled float32 map and whether it was flat (then it is all zeros, never NaN).
    """
    a = np.asarray(cam)
    if lo is None or hi is None:
        if a.size == 0:
            return np.zeros_like(a, dtype=np.float32), True
        lo = float(a.min()) if lo is None else lo
        hi = float(a.max()) if hi is None else hi
    if is_flat(lo, hi):
        return np.zeros_like(a, dtype=np.float32), True
    # Scale in float64: a ~1e-18 map divided by its ~1e-18 range stays exact.
    with np.errstate(invalid="ignore"):
        out = np.clip((a.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return np.nan_to_num(out, nan=0.0).astype(np.float32), False


def layer_ranges(maps: Sequence[np.ndarray], scale: str = "layer") -> list[tuple[float, float]]:
    """The colour range of each map: its own (``"layer"``) or one for all (``"shared"``)."""
    own = [map_range(m) for m in maps]
    if scale == "layer":
        return own
    if scale == "shared":
        if not own:
            return []
        shared = (min(r[0] for r in own), max(r[1] for r in own))
        return [shared] * len(own)
    raise UsageError(f"unknown scale {scale!r}; expected 'layer' or 'shared'")


def normalise_layers(maps: Sequence[np.ndarray], scale: str = "layer") -> tuple[list[np.ndarray], list[bool]]:
    """Normalise each map on its own (``"layer"``) or all on one range (``"shared"``)."""
    pairs = [normalise(m, lo, hi) for m, (lo, hi) in zip(maps, layer_ranges(maps, scale), strict=True)]
    return [p[0] for p in pairs], [p[1] for p in pairs]
