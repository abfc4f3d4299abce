"""What a writer is: one format, its limits, and how it writes an explanation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerscope.render.options import RenderOptions

#: ``write(explanation, path, options, index, overwrite) -> Path``; ``index`` is ``None``
#: only for writers that hold every image in one file.
WriteFn = Callable[[Any, Path, RenderOptions, "int | None", bool], Path]


@dataclass(frozen=True)
class Writer:
    """One output format.

    Attributes:
        name: what the format is, for messages (``"GIF animation"``).
        write: writes one file (see :data:`WriteFn`); called after every check passed.
        per_image: one file per image (``a_0.gif``, ``a_1.gif`` …) for a multi-image
            explanation; ``False``: one file holds every image (``.npz``).
        max_side: the format's largest width or height in pixels (``None``: no limit
            that layerscope can reach).
        draws_frames: whether the file holds drawn frames (then their size is checked
            against ``max_side`` before any work).
        even: frames are padded to even width and height (H.264).
        requires: ``(module, install hint)`` pairs the writer needs, checked before any work.
    """

    name: str
    write: WriteFn
    per_image: bool = True
    max_side: int | None = None
    draws_frames: bool = True
    even: bool = False
    requires: tuple[tuple[str, str], ...] = ()
