"""Turning raw maps into pictures: resize, normalise, colour, blend, caption.

Knows nothing about frameworks: it works on numpy maps and uint8 RGB images. The heatmap
is always blended over the *original* RGB image (never the preprocessed tensor, never in
BGR).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from layerscope.errors import UsageError

#: Frames are drawn at least this many pixels on their shorter side, so captions stay
#: readable for small inputs (a 32×32 CIFAR image, the 64×64 demo).
MIN_DISPLAY_SIDE = 224
MARGIN = 20
#: Maps whose range is below this are flat: they normalise to zeros, never NaN.
FLAT_EPS = 1e-12


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """A ``(256, 3)`` uint8 RGB lookup table from any matplotlib colormap name."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        names = list(matplotlib.colormaps)
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise UsageError(f"unknown colormap {name!r}{hint} (any matplotlib colormap works)") from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size`` = ``(height, width)``."""
    h, w = size
    if cam.shape == (h, w):
        return cam.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32), mode="F")
    return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def normalise(cam: np.ndarray, lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, bool]:
    """Min-max scale to [0, 1] (over ``cam`` or the given range).

    Returns:
        The scaled map and whether it was flat (then it is all zeros, never NaN).
    """
    lo = float(cam.min()) if lo is None else lo
    hi = float(cam.max()) if hi is None else hi
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= FLAT_EPS:
        return np.zeros_like(cam, dtype=np.float32), True
    return np.clip((cam - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), False


def normalise_layers(maps: Sequence[np.ndarray], scale: str = "layer") -> tuple[list[np.ndarray], list[bool]]:
    """Normalise each map on its own (``"layer"``) or all on one range (``"shared"``)."""
    if scale == "layer":
        pairs = [normalise(m) for m in maps]
    elif scale == "shared":
        lo = min(float(m.min()) for m in maps)
        hi = max(float(m.max()) for m in maps)
        pairs = [normalise(m, lo, hi) for m in maps]
    else:
        raise UsageError(f"unknown scale {scale!r}; expected 'layer' or 'shared'")
    return [p[0] for p in pairs], [p[1] for p in pairs]


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


def display_size(shape: tuple[int, int], min_side: int = MIN_DISPLAY_SIDE) -> tuple[int, int]:
    """``(height, width)`` to draw at: the image's own, scaled up if its shorter side is small."""
    h, w = shape
    f = max(1.0, min_side / max(1, min(h, w)))
    return round(h * f), round(w * f)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap of one caption line to ``width`` pixels."""
    words, lines, cur = text.split(" "), [], ""
    for word in words:
        trial = f"{cur} {word}".strip()
        if cur and draw.textlength(trial, font=font) > width:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    lines.append(cur)
    return lines


def frame(overlay: np.ndarray, caption: Sequence[str], margin: int = MARGIN) -> Image.Image:
    """The overlay on a black canvas with a ``margin``-pixel border and the caption below.

    The font scales with the image width, and lines wrap, so text stays readable at any size.
    """
    h, w = overlay.shape[:2]
    size = max(12, min(32, w // 22))
    font = _font(size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [ln for text in caption for ln in _wrap(scratch, text, font, w)]
    line_h = int(size * 1.35)
    band = max(100 - margin, margin + line_h * len(lines))
    canvas = Image.new("RGB", (w + 2 * margin, h + margin + band), (0, 0, 0))
    canvas.paste(Image.fromarray(overlay), (margin, margin))
    draw = ImageDraw.Draw(canvas)
    y = h + margin + margin // 2
    for ln in lines:
        draw.text((margin, y), ln, fill=(255, 255, 255), font=font)
        y += line_h
    return canvas


def overlay_frames(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    captions: Sequence[Sequence[str]],
    colormap: str = "jet",
    alpha: float = 0.5,
    scale: str = "layer",
    min_side: int = MIN_DISPLAY_SIDE,
) -> tuple[list[Image.Image], list[bool]]:
    """One captioned frame per map, each blended over ``image`` (uint8 RGB).

    Returns:
        The frames and, per map, whether it was flat.
    """
    colormap_lut(colormap)
    size = display_size(image.shape[:2], min_side)
    base = image
    if size != image.shape[:2]:
        base = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    resized = [resize_map(m, size) for m in maps]
    norms, flat = normalise_layers(resized, scale)
    frames = [frame(blend(base, heatmap(n, colormap), alpha), cap) for n, cap in zip(norms, captions, strict=True)]
    return frames, flat
