"""Caption text: a real TrueType font (every caption character has a glyph) and a layout in
which no caption line runs into the layer counter."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from layerscope import render
from layerscope.render.drawing import _layout
from layerscope.render.text import font, font_path

MISSING = "\U0001f600"  # an emoji: neither DejaVu Sans nor Pillow's font has it (drawn as the .notdef box)


def _mask(fnt: ImageFont.FreeTypeFont | ImageFont.ImageFont, ch: str) -> bytes:
    return bytes(np.asarray(fnt.getmask(ch)).tobytes())


def test_every_caption_character_has_a_glyph_at_every_size() -> None:
    assert font_path() is not None and font_path().endswith("DejaVuSans.ttf")
    for size in (8, 12, 20, 32):
        f = font(size)
        notdef = _mask(f, MISSING)
        for ch in "→×²½·≥":
            assert _mask(f, ch) != notdef, (ch, size)
        assert _mask(f, "→") != _mask(f, "×")
    # what the fix is about: Pillow's own font draws the arrow and the times sign as its box
    default = ImageFont.load_default(size=20)
    assert _mask(default, "→") == _mask(default, MISSING) == _mask(default, "×")


def test_a_caption_with_an_arrow_draws_it() -> None:
    img = Image.new("L", (120, 40))
    ImageDraw.Draw(img).text((4, 4), "17 → 4×4", fill=255, font=font(20))
    ink = np.asarray(img) > 0
    assert ink.any()
    boxed = Image.new("L", (120, 40))
    ImageDraw.Draw(boxed).text((4, 4), f"17 {MISSING} 4{MISSING}4", fill=255, font=font(20))
    assert not np.array_equal(ink, np.asarray(boxed) > 0)


def test_no_caption_line_reaches_the_counter() -> None:
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    word = "layers.3.blocks.1.attn(7×7→49)"  # one word: never broken
    counter = "6/6"
    for size, slack in ((14, 4), (20, 4), (28, 4), (12, -60)):  # -60: the word is wider than the frame
        width = int(scratch.textlength(word, font=font(size))) + slack
        caption = [word, "tokens 7×7 → 49 · class 'tabby' (p = 0.87)"]
        lines, fnt, _, row = _layout(caption, "a note", counter, width, size)
        text_right = scratch.textlength(lines[row][0], font=fnt)  # the text box on the counter's line: [0, right]
        counter_left = width - scratch.textlength(counter, font=fnt)  # the counter's box: [left, width]
        assert text_right <= counter_left, (size, lines[row][0], text_right, counter_left)
        assert [ln for ln, _ in lines if ln] and lines[-1][0] == "a note"


def test_a_frame_with_counter_keeps_text_and_counter_apart() -> None:
    overlay = np.zeros((96, 96, 3), np.uint8)
    for caption in (
        ["stage3.blocks.5.attn_proj(1,49,768)", "tokens 49 → 7×7"],  # wider than the frame even at 8 px
        ["Layer: layers.3", "tokens 49 → 7×7"],  # fits beside the counter
    ):
        both = np.asarray(render.frame(overlay, caption, margin=8, band=120, counter="6/6").convert("L")) > 60
        # the same lines, as laid out beside the counter, drawn without it
        lines, fnt, _, _ = _layout(caption, None, "6/6", 96, max(12, 96 // 22))
        plain = render.frame(overlay, [ln for ln, _ in lines], margin=8, band=120, font_size=fnt.size)
        plain = np.asarray(plain.convert("L")) > 60
        counter = both & ~plain
        assert counter.sum() > 10  # the counter was drawn
        near = np.zeros_like(counter)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(np.roll(counter, dy, 0), dx, 1)
        assert not (near & plain).any(), f"the caption touches the counter: {caption}"
