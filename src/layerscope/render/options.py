"""``RenderOptions``: the one way drawing options travel from the CLI or the caller to the
renderers and writers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from layerscope.errors import UsageError

SCALES = ("layer", "shared")
CAPTIONS = ("layerscope", "recipe")
#: The shortest frame, for every format (GIF stores durations in hundredths of a second:
#: below 10 ms a frame would last 0).
MIN_DURATION_MS = 10
#: An hour per frame is more than anyone means; larger values are a typo.
MAX_DURATION_MS = 3_600_000
#: The largest ``max_side`` allowed (formats have their own, lower limits: WebP 16,383).
MAX_SIDE_LIMIT = 8192


@dataclass(frozen=True)
class RenderOptions:
    """How maps become pictures.

    Attributes:
        colormap: any matplotlib colormap name.
        alpha: heatmap opacity over the photo, 0..1.
        scale: ``"layer"`` (each map on its own range) or ``"shared"`` (one range for all
            layers, so weak layers look weak).
        caption: ``"layerscope"`` (two lines: layer and real output shape; class,
            probability, method) or the notebook recipe's ``"recipe"`` line.
        duration: milliseconds per frame of an animation.
        cell: the shorter side of a grid cell, in pixels.
        side_by_side: draw the original image beside each overlay.
        colorbar: draw a colour bar with the scale's meaning on each frame.
        counter: draw a layer counter (``3/13``) on each frame.
        max_side: the longest side a frame's image is drawn at, in pixels; larger images
            are scaled down for display (the maps keep their resolution). At most
            :data:`MAX_SIDE_LIMIT`.
    """

    colormap: str = "jet"
    alpha: float = 0.5
    scale: str = "layer"
    caption: str = "layerscope"
    duration: int = 500
    cell: int = 160
    side_by_side: bool = False
    colorbar: bool = True
    counter: bool = True
    max_side: int = 2048

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RenderOptions:
        """Check every option (cheap: done before any model is loaded); returns ``self``."""
        from layerscope.render import colormap_lut

        colormap_lut(self.colormap)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"alpha must be a number between 0 and 1, not {self.alpha!r}")
        if self.scale not in SCALES:
            raise UsageError(f"unknown scale {self.scale!r}; expected one of {', '.join(SCALES)}")
        if self.caption not in CAPTIONS:
            raise UsageError(f"unknown caption style {self.caption!r}; expected one of {', '.join(CAPTIONS)}")
        if isinstance(self.duration, bool) or not isinstance(self.duration, int):
            raise UsageError(f"the frame duration must be a whole number of milliseconds, not {self.duration!r}")
        if not MIN_DURATION_MS <= self.duration <= MAX_DURATION_MS:
            raise UsageError(
                f"the frame duration must be between {MIN_DURATION_MS} and {MAX_DURATION_MS} ms, not {self.duration}"
            )
        if isinstance(self.cell, bool) or not isinstance(self.cell, int) or not 16 <= self.cell <= 2048:
            raise UsageError(f"the cell size must be a whole number of pixels from 16 to 2048, not {self.cell!r}")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int):
            raise UsageError(f"the largest display side must be a whole number of pixels, not {self.max_side!r}")
        if not 16 <= self.max_side <= MAX_SIDE_LIMIT:
            raise UsageError(
                f"the largest display side must be from 16 to {MAX_SIDE_LIMIT} pixels, not {self.max_side}"
            )
        for name in ("side_by_side", "colorbar", "counter"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be True or False, not {getattr(self, name)!r}")
        return self

    def replace(self, **changes: Any) -> RenderOptions:
        """A copy with some options changed (validated); an unknown name is a
        :class:`~layerscope.errors.UsageError` listing the options."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"unknown render option(s) {', '.join(unknown)}; the options: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def of(cls, options: RenderOptions | None = None, **changes: Any) -> RenderOptions:
        """``options`` (default: the defaults) with ``changes`` folded in."""
        if options is not None and not isinstance(options, RenderOptions):
            raise UsageError(f"options must be a layerscope RenderOptions, not {type(options).__name__}")
        return (options or cls()).replace(**changes)
