"""A layers × methods grid: one row per method, one column per layer, each cell the map
blended over the original image, rows and columns labelled.

Knows nothing about frameworks or methods: it draws numpy maps over a uint8 RGB image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from layerscope.errors import UsageError
from layerscope.render.drawing import base_image, overlay
from layerscope.render.options import RenderOptions
from layerscope.render.scale import is_flat, layer_ranges
from layerscope.render.text import font, wrap

#: Pixels between cells and around the grid.
GAP = 4
BACKGROUND = (0, 0, 0)
TEXT = (255, 255, 255)


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes. Cell ``(r, c)`` is at :meth:`box`; the whole grid is :attr:`size`."""

    rows: int
    cols: int
    cell_h: int
    cell_w: int
    label_w: int
    header_h: int
    gap: int = GAP

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the grid image."""
        return (
            self.label_w + self.cols * (self.cell_w + self.gap) + self.gap,
            self.header_h + self.rows * (self.cell_h + self.gap) + self.gap,
        )

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of cell ``(row, col)``."""
        x = self.label_w + self.gap + col * (self.cell_w + self.gap)
        y = self.header_h + self.gap + row * (self.cell_h + self.gap)
        return x, y, x + self.cell_w, y + self.cell_h


def draw_grid(
    image: np.ndarray,
    maps: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str = "",
    options: RenderOptions | None = None,
    **option_overrides: object,
) -> tuple[Image.Image, GridLayout]:
    """Draw the grid.

    Args:
        image: the original uint8 RGB image ``(H, W, 3)``.
        maps: ``maps[r][c]``, the 2-D map of method ``r`` at layer ``c`` (any resolution).
        row_labels: one per row (method names).
        col_labels: one per column (layer names).
        title: a line above the column labels (e.g. the explained class).
        options: the :class:`~layerscope.render.options.RenderOptions`: ``colormap``,
            ``alpha``, ``scale`` (``"layer"``: each cell on its own range; ``"shared"``: each
            row, a method's layers, on one range) and ``cell`` (the shorter side of a cell).
        **option_overrides: single options folded into ``options`` (``cell=40``).

    Returns:
        The grid image and its :class:`GridLayout`.
    """
    opts = RenderOptions.of(options, **option_overrides)
    colormap, alpha, scale, cell = opts.colormap, opts.alpha, opts.scale, opts.cell
    if not maps or not maps[0]:
        raise UsageError("a grid needs at least one method and one layer")
    if len(maps) != len(row_labels) or any(len(r) != len(col_labels) for r in maps):
        raise UsageError("the grid's maps do not match its row and column labels")
    h, w = image.shape[:2]
    f = cell / max(1, min(h, w))  # the shorter side becomes `cell`, up or down
    cell_h, cell_w = max(1, round(h * f)), max(1, round(w * f))
    base = base_image(image, (cell_h, cell_w))

    size = max(10, min(20, cell_w // 11))
    fnt = font(size)
    line_h = int(size * 1.35)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = GAP + max(int(scratch.textlength(t, font=fnt)) for t in row_labels) + 2 * GAP
    col_lines = [wrap(scratch, t, fnt, cell_w) for t in col_labels]
    title_lines = wrap(scratch, title, fnt, label_w + len(col_labels) * (cell_w + GAP)) if title else []
    header_h = GAP + line_h * (len(title_lines) + max(len(c) for c in col_lines)) + GAP
    layout = GridLayout(len(row_labels), len(col_labels), cell_h, cell_w, label_w, header_h)

    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = GAP
    for ln in title_lines:
        draw.text((GAP, y), ln, fill=TEXT, font=fnt)
        y += line_h
    for c, lines in enumerate(col_lines):
        x0 = layout.box(0, c)[0]
        for i, ln in enumerate(lines):
            draw.text((x0, y + i * line_h), ln, fill=TEXT, font=fnt)
    for r, row in enumerate(maps):
        top = layout.box(r, 0)[1]
        draw.text((GAP, top + (cell_h - line_h) // 2), row_labels[r], fill=TEXT, font=fnt)
        for c, (m, (lo, hi)) in enumerate(zip(row, layer_ranges(row, scale), strict=True)):
            a = np.asarray(m, dtype=np.float64)
            norm = np.zeros(a.shape, np.float32) if is_flat(lo, hi) else np.clip((a - lo) / (hi - lo), 0, 1)
            left, top, _, _ = layout.box(r, c)
            canvas.paste(Image.fromarray(overlay(base, np.nan_to_num(norm), colormap, alpha)), (left, top))
    return canvas, layout
