"""Turning raw maps into pictures: resize, normalise, colour, blend, caption, colour bar.

Knows nothing about frameworks: it works on numpy maps and uint8 RGB images. The heatmap
is always blended over the *original* RGB image (never the preprocessed tensor, never in
BGR). Modules: :mod:`~layerscope.render.options` (``RenderOptions``, the one way options
travel), :mod:`~layerscope.render.colors`, :mod:`~layerscope.render.scale` (normalising and
the flat test), :mod:`~layerscope.render.text`, :mod:`~layerscope.render.drawing` (frames)
and :mod:`~layerscope.render.grid` (the layers × methods grid).
"""

from __future__ import annotations

from layerscope.render.colors import blend, colorbar, colormap_lut, heatmap
from layerscope.render.drawing import (
    MARGIN,
    MAX_DISPLAY_PIXELS,
    MIN_DISPLAY_SIDE,
    ColorBar,
    DrawnBox,
    FrameText,
    base_image,
    display_size,
    draw_boxes,
    frame,
    frame_bound,
    overlay,
    overlay_frames,
    render_frames,
    resize_map,
)
from layerscope.render.options import RenderOptions
from layerscope.render.scale import (
    FLAT_ATOL,
    FLAT_RTOL,
    flat_mask,
    is_flat,
    layer_ranges,
    map_range,
    normalise,
    normalise_layers,
)

__all__ = [
    "FLAT_ATOL",
    "FLAT_RTOL",
    "MARGIN",
    "MAX_DISPLAY_PIXELS",
    "MIN_DISPLAY_SIDE",
    "ColorBar",
    "DrawnBox",
    "FrameText",
    "RenderOptions",
    "base_image",
    "blend",
    "colorbar",
    "colormap_lut",
    "display_size",
    "draw_boxes",
    "flat_mask",
    "frame",
    "frame_bound",
    "heatmap",
    "is_flat",
    "layer_ranges",
    "map_range",
    "normalise",
    "normalise_layers",
    "overlay",
    "overlay_frames",
    "render_frames",
    "resize_map",
]
