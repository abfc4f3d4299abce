"""Text on frames: the font, and word wrapping that never breaks a bracketed group such as
a shape ``(14, 14, 512)`` across lines.

The font is DejaVu Sans, the TrueType font matplotlib ships (a dependency), at every size:
Pillow's built-in font has no ``→``, ``×`` or ``²`` and draws them as boxes."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: The smallest font size used when shrinking text to fit.
MIN_FONT = 8

_TOKEN = re.compile(r"(?:\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}|[^\s(\[{])+|[(\[{]")


@lru_cache(maxsize=1)
def font_path() -> str | None:
    """The TrueType file captions are drawn with: matplotlib's DejaVu Sans (``None`` if
    that file is missing, then Pillow's built-in font is used)."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    return path if os.path.isfile(path) else None


@lru_cache(maxsize=32)
def font(size: int) -> Font:
    """The caption font (DejaVu Sans, see :func:`font_path`) at ``size`` pixels."""
    path = font_path()
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size=size)


def _scratch() -> ImageDraw.ImageDraw:
    return ImageDraw.Draw(Image.new("RGB", (1, 1)))


def tokens(text: str) -> list[str]:
    """Words of ``text``; a bracketed group (with its spaces) and what is glued to it stay one
    word: ``"size: (14, 14, 512)"`` → ``["size:", "(14, 14, 512)"]``."""
    return _TOKEN.findall(text)


def wrap(draw: ImageDraw.ImageDraw | None, text: str, fnt: Font, width: int) -> list[str]:
    """Greedy word wrap of one caption line to ``width`` pixels (bracketed groups unbroken)."""
    draw = draw or _scratch()
    lines: list[str] = []
    cur = ""
    for word in tokens(text):
        trial = f"{cur} {word}".strip()
        if cur and draw.textlength(trial, font=fnt) > width:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    lines.append(cur)
    return lines


def fit(texts: Sequence[str], width: int, size: int) -> tuple[Font, int]:
    """The largest font size ≤ ``size`` (≥ :data:`MIN_FONT`) at which every word of ``texts``
    fits in ``width`` pixels: the font and its size."""
    draw = _scratch()
    words = [w for t in texts for w in tokens(t)]
    while size > MIN_FONT:
        f = font(size)
        if all(draw.textlength(w, font=f) <= width for w in words):
            return f, size
        size -= 1
    return font(MIN_FONT), MIN_FONT
