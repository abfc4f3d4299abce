"""render: normalising and the flat test, colours, text that never breaks a shape, bounded
display sizes, frames (colour bar, counter, note, side by side) drawn one at a time."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from PIL import Image

from layerscope import render
from layerscope.errors import UsageError
from layerscope.render import FrameText, RenderOptions
from layerscope.render.drawing import NOTE
from layerscope.render.text import tokens, wrap


def test_normalise_flat_and_negative_maps_give_zeros_not_nan() -> None:
    for flat in (np.zeros((3, 3), np.float32), np.full((3, 3), 7.0, np.float32)):
        out, is_flat = render.normalise(flat)
        assert is_flat and np.array_equal(out, np.zeros((3, 3), np.float32))
    out, is_flat = render.normalise(np.array([[1.0, 3.0], [2.0, 5.0]], np.float32))
    assert not is_flat
    np.testing.assert_allclose(out, [[0.0, 0.5], [0.25, 1.0]])


def test_flat_is_relative_to_the_maps_own_scale() -> None:
    tiny = np.array([[0.0, 1e-18], [3e-18, 4e-18]], np.float32)  # a confident softmax model's map
    assert not render.is_flat(float(tiny.min()), float(tiny.max()))
    out, is_flat = render.normalise(tiny)
    assert not is_flat
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.75, 1.0]], atol=1e-6)
    noisy = np.float32(7.0) + np.array([0, 1, 2, 0], np.float32) * np.spacing(np.float32(7.0))  # rounding noise
    assert render.is_flat(float(noisy.min()), float(noisy.max()))
    assert render.is_flat(0.0, 0.0) and render.is_flat(0.0, float("nan")) and render.is_flat(0.0, 1e-40)
    assert not render.is_flat(7.0, 7.001)
    cams = np.stack([tiny, np.zeros_like(tiny), np.full_like(tiny, 3.0), tiny * 1e20])
    assert render.flat_mask(cams).tolist() == [False, True, True, False]


def test_shared_scale_keeps_relative_strength() -> None:
    weak, strong = np.array([[0.0, 1.0]], np.float32), np.array([[0.0, 4.0]], np.float32)
    per_layer, _ = render.normalise_layers([weak, strong], "layer")
    shared, _ = render.normalise_layers([weak, strong], "shared")
    np.testing.assert_allclose(per_layer[0], [[0.0, 1.0]])
    np.testing.assert_allclose(shared[0], [[0.0, 0.25]])
    np.testing.assert_allclose(shared[1], [[0.0, 1.0]])
    with pytest.raises(UsageError, match="scale"):
        render.normalise_layers([weak], "global")


def test_jet_is_rgb_and_blend_is_over_the_original() -> None:
    lut = render.colormap_lut("jet")
    assert lut.shape == (256, 3)
    assert lut[255, 0] > 100 and lut[255, 2] == 0  # hot = red in RGB (BGR would be blue)
    assert lut[0, 2] > 100 and lut[0, 0] == 0  # cold = blue
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 1] = 200  # green photo
    heat = render.heatmap(np.ones((2, 2), np.float32))
    out = render.blend(img, heat, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], np.round(0.5 * img[0, 0] + 0.5 * lut[255].astype(float)))
    np.testing.assert_array_equal(render.blend(img, heat, alpha=0.0), img)
    with pytest.raises(UsageError, match=r"unknown colormap 'jte'\. Did you mean jet\b.*Any matplotlib colormap works"):
        render.colormap_lut("jte")
    bar = render.colorbar(50, 6, "jet")
    assert bar.shape == (50, 6, 3) and np.array_equal(bar[0, 0], lut[255]) and np.array_equal(bar[-1, 0], lut[0])


def test_banded_overlay_equals_resize_colour_blend() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (600, 310, 3), dtype=np.uint8)  # taller than one band of rows
    norm = rng.random((7, 5)).astype(np.float32)
    ref = render.blend(base, render.heatmap(render.resize_map(norm, (600, 310)), "viridis"), 0.3)
    np.testing.assert_array_equal(render.overlay(base, norm, "viridis", 0.3), ref)


def test_display_size_is_bounded_before_any_work() -> None:
    assert render.display_size((32, 32)) == (224, 224)  # small images are enlarged
    assert render.display_size((300, 400)) == (300, 400)
    assert render.display_size((1, 300)) == (7, 2048)  # was 224×67,200 (issue 9 #1)
    assert render.display_size((1, 3000)) == (1, 2048)
    assert render.display_size((8000, 8000)) == (2048, 2048)
    assert render.display_size((8000, 6000), max_side=512) == (512, 384)
    h, w = render.display_size((8000, 8000), max_side=8192)
    assert h * w <= render.MAX_DISPLAY_PIXELS and h == w == 4096
    with pytest.raises(UsageError, match="largest display side"):
        RenderOptions(max_side=100_000)


def test_a_bracketed_shape_is_never_broken_across_lines() -> None:
    line = "Layer: block5_conv3, Output size: (14, 14, 512)"
    assert tokens(line)[-1] == "(14, 14, 512)"
    from layerscope.render.text import font

    for width in (40, 80, 120, 200, 400):
        lines = wrap(None, line, font(12), width)
        assert " ".join(lines) == line
        assert all(ln.count("(") == ln.count(")") for ln in lines), lines
    # The frame shrinks its font until the shape fits the frame's width.
    narrow = render.frame(np.zeros((60, 60, 3), np.uint8), [line], margin=4)
    assert narrow.width == 68


def test_frame_layout_colour_bar_counter_and_note() -> None:
    overlay = np.zeros((120, 120, 3), np.uint8)
    plain = render.frame(overlay, ["Layer: a · output 8x4x4", "Class: x (p = 0.50)"])
    assert plain.size == (120 + 2 * render.MARGIN, 120 + 100)
    px = np.asarray(plain)
    assert px[120 + render.MARGIN :].max() > 200 and px[0, 0].tolist() == [0, 0, 0]  # white text, black canvas
    bar = render.ColorBar("jet", 0.0, 2.5e-3, "per layer")
    full = render.frame(overlay, ["Layer: a"], bar=bar, counter="3/13", note="RANDOM WEIGHTS")
    assert full.width > plain.width
    a = np.asarray(full).astype(int)
    m = render.MARGIN
    x = m + 120 + m // 2
    lut = render.colormap_lut("jet")
    assert np.array_equal(a[m, x], lut[255]) and np.array_equal(a[m + 119, x], lut[0])  # bar: hot at the top
    amber = np.all(np.abs(a - np.array(NOTE)) < 40, axis=2)
    assert amber[m + 120 :].sum() > 20 and amber[: m + 120, : m + 120].sum() == 0  # the note, under the picture
    right = a[m + 120 :, full.width - m - 30 : full.width - m]
    assert right.max() > 150  # the counter, right-aligned


def picture(h: int = 40, w: int = 60) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 120
    img[5:20, 10:30] = (250, 250, 250)
    return img


def test_render_frames_is_lazy_and_frames_share_one_size() -> None:
    maps = [np.random.default_rng(i).random((4, 6)) for i in range(3)]
    texts = [FrameText(("Layer: short",)), FrameText(("Layer: " + "very " * 80 + "long",)), FrameText(("x",))]
    gen = render.render_frames(picture(), maps, texts)
    assert inspect.isgenerator(gen)
    frames = list(gen)
    assert len({f.size for f in frames}) == 1
    h, _ = render.display_size((40, 60))
    assert frames[0].height > h + 100  # the long caption made every band taller


def test_side_by_side_shows_the_original_left_of_the_overlay() -> None:
    img = picture()
    maps = [np.ones((4, 6))]
    opts = RenderOptions(side_by_side=True, colorbar=False)
    (fr,) = render.render_frames(img, maps, [["cap"]], opts)
    h, w = render.display_size(img.shape[:2])
    m = render.MARGIN
    a = np.asarray(fr)
    base = render.base_image(img, (h, w))
    assert fr.width == m + w + m + w + m
    np.testing.assert_array_equal(a[m : m + h, m : m + w], base)
    assert not np.array_equal(a[m : m + h, 2 * m + w : 2 * m + 2 * w], base)


def test_recipe_frames_have_the_recipes_size() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    caption = [["Layer: b, Output size: (2, 2, 8)"]]
    (fr,) = render.render_frames(img, [np.ones((2, 2))], caption, RenderOptions(caption="recipe"))
    assert fr.size == (224 + 40, 224 + 100)


def test_shared_ranges_and_flat_flags_of_overlay_frames() -> None:
    img = picture()
    maps = [np.zeros((4, 6)), np.arange(24.0).reshape(4, 6)]
    _, flat = render.overlay_frames(img, maps, [["a"], ["b"]], RenderOptions(scale="layer"))
    assert flat == [True, False]
    _, flat = render.overlay_frames(img, maps, [["a"], ["b"]], RenderOptions(scale="shared"))
    assert flat == [False, False]
    frames = list(render.render_frames(img, maps, [["a"], ["b"]], RenderOptions(alpha=1.0, colorbar=False)))
    m = render.MARGIN
    lut = render.colormap_lut("jet")
    assert np.array_equal(np.asarray(frames[0])[m + 5, m + 5], lut[0])  # a flat map is drawn as zeros


def test_frame_image_is_pil_rgb() -> None:
    (fr,) = render.render_frames(picture(), [np.ones((2, 2))], [["a"]])
    assert isinstance(fr, Image.Image) and fr.mode == "RGB"
