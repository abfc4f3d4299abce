"""Colours: colormap lookup tables, heatmaps, blending over the original image."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from layerscope.errors import UsageError, unknown_name


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """A ``(256, 3)`` uint8 RGB lookup table from any matplotlib colormap name."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise UsageError(
            unknown_name("colormap", name, matplotlib.colormaps, valid="", also=" Any matplotlib colormap works.")
        ) from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    lut = np.round(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def heatmap(norm: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """uint8 RGB heatmap of a [0, 1] map."""
    idx = np.clip(np.round(norm * 255.0), 0, 255).astype(np.uint8)
    return colormap_lut(colormap)[idx]


def blend(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 − alpha)·image + alpha·heat``, both uint8 RGB of the same size."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be between 0 and 1, not {alpha}")
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def colorbar(height: int, width: int, colormap: str = "jet") -> np.ndarray:
    """A vertical uint8 RGB colour bar ``(height, width, 3)``: the top is the colormap's
    high end (1), the bottom its low end (0)."""
    lut = colormap_lut(colormap)
    idx = np.round(np.linspace(255.0, 0.0, max(1, height))).astype(np.intp)
    return np.ascontiguousarray(np.broadcast_to(lut[idx][:, None, :], (max(1, height), max(1, width), 3)))
