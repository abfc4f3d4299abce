"""Frames: a map blended over the original image, with its caption, a colour bar, a layer
counter, the model's note, and optionally the original beside it.

Frames are drawn one at a time in uint8 (:func:`render_frames` is a generator), and the
display size is bounded before any work (:func:`display_size`), so memory stays small for
any allowed image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from layerscope.render.colors import colorbar, colormap_lut
from layerscope.render.options import RenderOptions
from layerscope.render.scale import is_flat, layer_ranges
from layerscope.render.text import fit, font, wrap
from layerscope.resize import bilinear_matrix, resize_bilinear

#: Frames are drawn at least this many pixels on their shorter side, so captions stay
#: readable for small inputs (a 32×32 CIFAR image, the 64×64 demo).
MIN_DISPLAY_SIDE = 224
#: At most this many pixels are drawn per frame, whatever ``max_side`` allows.
MAX_DISPLAY_PIXELS = 16_777_216
MARGIN = 20
#: The caption band is at least this tall (with the margin: the recipe's 100 extra pixels).
MIN_BAND = 100 - MARGIN
#: Rows blended at a time: temporaries stay ``BAND_ROWS × width`` whatever the image size.
BAND_ROWS = 256
#: The most caption lines a frame has (layer, class, note, wrapped) when bounding sizes.
MAX_CAPTION_LINES = 8

TEXT = (255, 255, 255)
DIM = (190, 190, 190)
NOTE = (255, 190, 0)


def display_size(
    shape: tuple[int, int],
    min_side: int = MIN_DISPLAY_SIDE,
    max_side: int = RenderOptions.max_side,
    max_pixels: int = MAX_DISPLAY_PIXELS,
) -> tuple[int, int]:
    """``(height, width)`` to draw at: the image's own, scaled up if its shorter side is below
    ``min_side``, and down so that its longer side is at most ``max_side`` and its area at
    most ``max_pixels`` (the bound wins over ``min_side``: a 1×300 strip is not drawn
    224 pixels tall). Aspect is kept; each side is at least 1."""
    h, w = max(1, int(shape[0])), max(1, int(shape[1]))
    f = max(1.0, min_side / min(h, w))
    f = min(f, max_side / max(h, w), math.sqrt(max_pixels / (h * w)))
    return max(1, min(max_side, round(h * f))), max(1, min(max_side, round(w * f)))


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size`` = ``(height, width)`` (the package's
    one convention, :mod:`layerscope.resize`), float32."""
    return resize_bilinear(np.asarray(cam, dtype=np.float32), size).astype(np.float32, copy=False)


def overlay(base: np.ndarray, norm: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map at any resolution, enlarged bilinearly to ``base``'s size, coloured and
    blended over ``base`` (uint8 RGB), in bands of rows so the temporaries stay small.

    Equal to ``blend(base, heatmap(resize_map(norm, base.shape[:2]), colormap), alpha)``: the
    blend of every (photo value, colour index) pair is looked up in a table computed with
    the same float32 arithmetic.
    """
    H, W = base.shape[:2]
    n = np.asarray(norm, dtype=np.float32)
    wy = bilinear_matrix(n.shape[0], H).astype(np.float32)
    right = n @ bilinear_matrix(n.shape[1], W).astype(np.float32).T  # (h, W)
    table = _blend_table(colormap, float(alpha))
    offset = (np.arange(3, dtype=np.int32) << 16)[None, None, :]
    out = np.empty_like(base)
    for y0 in range(0, H, BAND_ROWS):
        rows = wy[y0 : y0 + BAND_ROWS] @ right
        idx = np.clip(np.round(rows * 255.0), 0, 255).astype(np.int32)
        key = (base[y0 : y0 + BAND_ROWS].astype(np.int32) << 8) | idx[..., None]
        out[y0 : y0 + BAND_ROWS] = table.take(key + offset)
    return out


@lru_cache(maxsize=16)
def _blend_table(colormap: str, alpha: float) -> np.ndarray:
    """``table[c << 16 | photo << 8 | index]``: channel ``c`` of ``(1 − alpha)·photo +
    alpha·colour[index]``, rounded to uint8 (float32, as :func:`~layerscope.render.blend`)."""
    lut = colormap_lut(colormap).astype(np.float32) * np.float32(alpha)  # (256, 3)
    photo = np.float32(1.0 - alpha) * np.arange(256, dtype=np.float32)
    mixed = photo[None, :, None] + lut.T[:, None, :]  # (3, photo, index)
    table = np.clip(np.round(mixed), 0, 255).astype(np.uint8).reshape(-1)
    table.setflags(write=False)
    return table


@dataclass(frozen=True)
class FrameText:
    """What is written on one frame.

    Attributes:
        lines: caption lines (wrapped to the frame, bracketed groups never broken).
        note: a warning label drawn in amber (``"RANDOM WEIGHTS"``), or ``None``.
        counter: the layer counter (``"3/13"``) drawn at the right, or ``None``.
    """

    lines: tuple[str, ...]
    note: str | None = None
    counter: str | None = None


@dataclass(frozen=True)
class DrawnBox:
    """A detection drawn on a frame: ``(x0, y0, x1, y1)`` in the picture's pixels, ``thick``
    for the explained box (white, with its ``text`` above it), thin (magenta) for the others."""

    box: tuple[float, float, float, float]
    thick: bool = False
    text: str | None = None


#: The explained box's colour and the other detections'.
BOX_THICK = (255, 255, 255)
BOX_THIN = (255, 0, 255)  # magenta: no colour of the usual colormaps


def draw_boxes(rgb: np.ndarray, boxes: Sequence[DrawnBox], scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``rgb`` (uint8 ``(h, w, 3)``) with ``boxes`` drawn on it, their coordinates multiplied
    by ``scale`` = ``(sy, sx)``: thin ones first, the thick one (3 px or more, a dark outline
    so it reads over any colour) on top with its text; a new array."""
    if not boxes:
        return rgb
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    sy, sx = scale
    width = max(3, round(min(h, w) / 80))
    fnt = font(max(10, min(h, w) // 24))
    for b in sorted(boxes, key=lambda b: b.thick):
        x0, y0, x1, y1 = b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy
        xy = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if not b.thick:
            draw.rectangle(xy, outline=BOX_THIN, width=max(1, width // 3))
            continue
        grow = (xy[0] - 1, xy[1] - 1, xy[2] + 1, xy[3] + 1)
        draw.rectangle(grow, outline=(0, 0, 0), width=width + 2)
        draw.rectangle(xy, outline=BOX_THICK, width=width)
        if b.text:
            ty = xy[1] - width if xy[1] - width - fnt.size > 0 else xy[3] + width + fnt.size
            left, top, right, bottom = draw.textbbox((xy[0], ty), b.text, font=fnt, anchor="ld")
            draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
            draw.text((xy[0], ty), b.text, fill=BOX_THICK, font=fnt, anchor="ld")
    return np.asarray(img)


@dataclass(frozen=True)
class ColorBar:
    """A colour bar beside the overlay: the colormap from ``lo`` (bottom) to ``hi`` (top)
    in the map's own units, and what the range is (``"per layer"`` / ``"shared"``)."""

    colormap: str
    lo: float
    hi: float
    label: str = ""


def _bar_geometry(h: int, fnt_size: int) -> tuple[int, int]:
    """Bar width and the width of its labels."""
    return max(8, min(24, h // 16)), 6 * max(10, int(fnt_size * 0.75)) + 8


def _fmt(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}"


def frame(
    overlay_rgb: np.ndarray,
    caption: Sequence[str],
    margin: int = MARGIN,
    *,
    original: np.ndarray | None = None,
    bar: ColorBar | None = None,
    note: str | None = None,
    counter: str | None = None,
    band: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """The overlay on a black canvas with a ``margin``-pixel border and the caption below.

    Args:
        overlay_rgb: uint8 ``(h, w, 3)``.
        caption: caption lines; they wrap, and the font shrinks so that no word (a shape in
            brackets counts as one word) is wider than the frame.
        margin: border in pixels.
        original: the original image at the overlay's size, drawn to its left.
        bar: a colour bar drawn to the right, labelled with its range.
        note: a warning line drawn in amber under the caption.
        counter: drawn right-aligned on the first caption line (``"3/13"``).
        band: the caption band's height (so all frames of an animation have one size).
        font_size: the caption font size (default: scaled with the width, 12..32).
    """
    h, w = overlay_rgb.shape[:2]
    size = font_size or max(12, min(32, w // 22))
    fnt_bar = font(max(10, int(size * 0.75)))
    bar_w, label_w = _bar_geometry(h, size) if bar is not None else (0, 0)
    left = margin + (w + margin if original is not None else 0)
    width = left + w + (margin // 2 + bar_w + 4 + label_w if bar is not None else 0) + margin
    lines, fnt, line_h, counter_row = _layout(caption, note, counter, width - 2 * margin, size)
    need = margin // 2 + line_h * len(lines) + margin // 2
    band = max(band or 0, MIN_BAND, need)
    canvas = Image.new("RGB", (width, h + margin + band), (0, 0, 0))
    if original is not None:
        canvas.paste(Image.fromarray(original), (margin, margin))
    canvas.paste(Image.fromarray(overlay_rgb), (left, margin))
    draw = ImageDraw.Draw(canvas)
    if bar is not None:
        x = left + w + margin // 2
        canvas.paste(Image.fromarray(colorbar(h, bar_w, bar.colormap)), (x, margin))
        tx = x + bar_w + 4
        draw.text((tx, margin), _fmt(bar.hi), fill=TEXT, font=fnt_bar)
        draw.text((tx, margin + h), _fmt(bar.lo), fill=TEXT, font=fnt_bar, anchor="ld")
        if bar.label:
            for i, word in enumerate(bar.label.split()):
                draw.text((tx, margin + h // 2 + i * int(fnt_bar.size * 1.2)), word, fill=DIM, font=fnt_bar)
    y = h + margin + margin // 2
    for i, (ln, colour) in enumerate(lines):
        draw.text((margin, y), ln, fill=colour, font=fnt)
        if i == counter_row and counter:
            draw.text((width - margin, y), counter, fill=DIM, font=fnt, anchor="ra")
        y += line_h
    return canvas


def _layout(
    caption: Sequence[str], note: str | None, counter: str | None, width: int, size: int
) -> tuple[list[tuple[str, tuple[int, int, int]]], Any, int, int]:
    """The caption's lines and colours, the font, the line height, and the line the counter
    is drawn on, right-aligned: the first caption line, or, when even the smallest font
    leaves no room beside it (one long unbreakable word), a line of its own after the
    caption, so that text and counter never overlap."""
    texts = [*caption, *([note] if note else [])]
    fnt, size = fit(texts, max(1, width), size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    reserve = int(scratch.textlength(f"  {counter}", font=fnt)) if counter else 0
    if counter and caption:
        # the first caption's words also fit beside the counter, so no line runs into it
        _, first_size = fit(caption[:1], max(1, width - reserve), size)
        if first_size < size:
            fnt, size = fit(texts, max(1, width), first_size)
            reserve = int(scratch.textlength(f"  {counter}", font=fnt))
    lines: list[tuple[str, tuple[int, int, int]]] = []
    for k, text in enumerate(caption):
        for ln in wrap(scratch, text, fnt, max(1, width - (reserve if k == 0 else 0))):
            lines.append((ln, TEXT))
    counter_row = 0
    if counter and lines and scratch.textlength(lines[0][0], font=fnt) > width - reserve:
        counter_row = len(lines)  # after the caption, before the note
        lines.insert(counter_row, ("", TEXT))
    if note:
        lines += [(ln, NOTE) for ln in wrap(scratch, note, fnt, max(1, width))]
    return lines, fnt, int(size * 1.35), counter_row


def base_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo at the display ``size`` (PIL bilinear: it antialiases when shrinking).

    A photo shrunk by 2× or more is first averaged over ``k × k`` blocks in bands of rows
    (uint8 out), so a 64-megapixel photo never becomes a second full-size copy in PIL.
    """
    if size == image.shape[:2]:
        return np.ascontiguousarray(image)
    k = min(image.shape[0] // max(1, size[0]), image.shape[1] // max(1, size[1]))
    if k >= 2:
        image = _block_mean(image, k)
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``k × k`` blocks (remainder rows and columns dropped), uint8, computed by
    PIL's ``reduce`` on bands of rows."""
    h, w = image.shape[0] // k, image.shape[1] // k
    out = np.empty((h, w, image.shape[2]), np.uint8)
    step = max(1, BAND_ROWS // k) * 4
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        band = Image.fromarray(np.ascontiguousarray(image[y0 * k : y1 * k, : w * k]))
        out[y0:y1] = np.asarray(band.reduce(k))
    return out


def render_frames(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    texts: Sequence[FrameText | Sequence[str]],
    options: RenderOptions | None = None,
    ranges: Sequence[tuple[float, float]] | None = None,
    boxes: Sequence[DrawnBox] = (),
) -> Iterator[Image.Image]:
    """One frame per map, each blended over ``image`` (uint8 RGB), drawn one at a time.

    Every frame has the same size. With ``options.caption == "recipe"`` the frame is the
    notebook recipe's (no colour bar, no counter); otherwise ``options.colorbar`` and
    ``options.counter`` add them.

    Args:
        image: the original uint8 RGB image ``(H, W, 3)``.
        maps: 2-D maps at any resolution, one per frame.
        texts: a :class:`FrameText` (or a list of caption lines) per map.
        options: the :class:`RenderOptions`.
        ranges: the ``(lo, hi)`` colour range of each map (default: from ``options.scale``,
            see :func:`~layerscope.render.scale.layer_ranges`).
        boxes: detections drawn on every overlay, in ``image``'s pixels (:func:`draw_boxes`).

    Yields:
        PIL RGB images.
    """
    opts = options or RenderOptions()
    if len(maps) != len(texts):
        raise ValueError(f"{len(maps)} maps but {len(texts)} captions")
    fts = [t if isinstance(t, FrameText) else FrameText(tuple(t)) for t in texts]
    recipe = opts.caption == "recipe"
    size = display_size(image.shape[:2], max_side=opts.max_side)
    base = base_image(image, size)
    ranges = list(ranges) if ranges is not None else layer_ranges(maps, opts.scale)
    if len(ranges) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(ranges)} ranges")
    h, w = size
    fsize = max(12, min(32, w // 22))
    bar_on = opts.colorbar and not recipe
    # One caption band for all frames: lay every caption out first (cheap), then draw.
    full_w = (
        MARGIN
        + (w + MARGIN if opts.side_by_side else 0)
        + w
        + (MARGIN // 2 + sum(_bar_geometry(h, fsize)) + 4 if bar_on else 0)
        + MARGIN
    )
    counters = [None if recipe or not opts.counter else t.counter for t in fts]
    band = 0
    for t, c in zip(fts, counters, strict=True):
        lines, _, line_h, _ = _layout(t.lines, t.note, c, full_w - 2 * MARGIN, fsize)
        band = max(band, MARGIN // 2 + line_h * len(lines) + MARGIN // 2)
    label = "shared" if opts.scale == "shared" else "per layer"
    box_scale = (h / max(1, image.shape[0]), w / max(1, image.shape[1]))
    for m, t, c, (lo, hi) in zip(maps, fts, counters, ranges, strict=True):
        a = np.asarray(m, dtype=np.float64)
        if is_flat(lo, hi):
            norm = np.zeros(a.shape, np.float32)
        else:
            with np.errstate(invalid="ignore"):
                norm = np.nan_to_num(np.clip((a - lo) / (hi - lo), 0.0, 1.0), nan=0.0).astype(np.float32)
        bar = ColorBar(opts.colormap, lo, hi, label) if bar_on else None
        yield frame(
            draw_boxes(overlay(base, norm, opts.colormap, opts.alpha), boxes, box_scale),
            list(t.lines),
            original=base if opts.side_by_side else None,
            bar=bar,
            note=t.note,
            counter=c,
            band=band,
            font_size=fsize,
        )


def overlay_frames(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    captions: Sequence[FrameText | Sequence[str]],
    options: RenderOptions | None = None,
) -> tuple[list[Image.Image], list[bool]]:
    """All frames as a list (see :func:`render_frames`) and, per map, whether it was flat on
    the chosen scale."""
    opts = options or RenderOptions()
    frames = list(render_frames(image, maps, captions, opts))
    return frames, [is_flat(lo, hi) for lo, hi in layer_ranges(maps, opts.scale)]


def frame_bound(options: RenderOptions) -> tuple[int, int]:
    """An upper bound on a frame's ``(width, height)`` under ``options``, for any image: what
    the writers check against a format's limits before any work."""
    side = options.max_side
    fsize = 32
    bar = MARGIN // 2 + sum(_bar_geometry(side, fsize)) + 4 if options.colorbar else 0
    width = MARGIN + (side + MARGIN if options.side_by_side else 0) + side + bar + MARGIN
    height = side + MARGIN + max(MIN_BAND, MARGIN + int(fsize * 1.35) * MAX_CAPTION_LINES)
    return width, height
