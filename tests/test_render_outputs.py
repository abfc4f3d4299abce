"""Rendering (normalise, colours, blend over the original) and atomic writers (GIF)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import layerscope
from layerscope import outputs, render
from layerscope.errors import OutputError, UsageError


def test_normalise_flat_and_negative_maps_give_zeros_not_nan() -> None:
    for flat in (np.zeros((3, 3), np.float32), np.full((3, 3), 7.0, np.float32)):
        out, is_flat = render.normalise(flat)
        assert is_flat and np.array_equal(out, np.zeros((3, 3), np.float32))
    out, is_flat = render.normalise(np.array([[1.0, 3.0], [2.0, 5.0]], np.float32))
    assert not is_flat
    np.testing.assert_allclose(out, [[0.0, 0.5], [0.25, 1.0]])


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
    with pytest.raises(UsageError, match="colormap"):
        render.colormap_lut("jte")


def test_resize_map_is_bilinear() -> None:
    up = render.resize_map(np.array([[0.0, 1.0]], np.float32), (1, 4))
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)


def test_frame_layout_and_readable_caption_for_small_images() -> None:
    overlay = np.zeros((30, 30, 3), np.uint8)
    fr = render.frame(overlay, ["Layer: a very long layer name · output 512x14x14", "Class: x (p = 0.50)"])
    assert fr.width == 30 + 2 * render.MARGIN
    assert fr.height > 30 + 100 - render.MARGIN  # wrapped text adds lines
    px = np.asarray(fr)
    assert px[:, :, :].max() == 255  # white text was drawn
    assert px[0, 0].tolist() == [0, 0, 0]  # black canvas
    assert render.display_size((32, 32)) == (224, 224)
    assert render.display_size((300, 400)) == (300, 400)


def read_gif(path: Path) -> tuple[int, list[int], int, tuple[int, int]]:
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        return im.n_frames, durations, im.info["loop"], im.size


def test_gif_keeps_identical_frames_and_loops(tmp_path: Path) -> None:
    same = Image.new("RGB", (20, 10), (10, 20, 30))
    other = Image.new("RGB", (20, 10), (200, 20, 30))
    p = outputs.write_animation(tmp_path / "a.gif", [same, same, same, other], duration=250)
    n, durations, loop, size = read_gif(p)
    assert (n, durations, loop, size) == (4, [250] * 4, 0, (20, 10))
    with Image.open(p) as im:
        im.seek(3)
        assert im.convert("RGB").getpixel((0, 0)) == (200, 20, 30)
        im.seek(1)
        assert im.convert("RGB").getpixel((0, 0)) == (10, 20, 30)


def test_gif_palette_is_shared_by_all_frames(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), (i * 20, 255 - i * 20, 40)) for i in range(5)]
    p = outputs.write_animation(tmp_path / "p.gif", frames)
    data = p.read_bytes()
    # No frame carries a local colour table: the image descriptor's packed byte has bit 7 clear.
    idx = [i for i in range(len(data) - 10) if data[i] == 0x2C and data[i + 1 : i + 5] == b"\x00\x00\x00\x00"]
    assert len(idx) == 5 and all(data[i + 9] & 0x80 == 0 for i in idx)
    with Image.open(p) as im:
        for i in range(5):
            im.seek(i)
            assert im.convert("RGB").getpixel((3, 3)) == (i * 20, 255 - i * 20, 40)


def test_existing_output_is_refused_and_untouched(tmp_path: Path) -> None:
    p = tmp_path / "out.gif"
    p.write_bytes(b"precious")
    frame = Image.new("RGB", (4, 4))
    with pytest.raises(OutputError, match="--overwrite"):
        outputs.write_animation(p, [frame])
    assert p.read_bytes() == b"precious"
    outputs.write_animation(p, [frame], overwrite=True)
    assert p.read_bytes()[:6] == b"GIF89a"


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    p = tmp_path / "x.gif"
    with pytest.raises(RuntimeError), outputs.atomic_file(p) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_unwritable_or_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        outputs.check_writable(tmp_path / "no" / "x.gif")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="does not exist"):
        outputs.check_writable(tmp_path / "file.txt" / "x.gif")
    # Tests run as root in CI, where permission bits are not enforced: simulate the check.
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="not writable"):
        outputs.check_writable(tmp_path / "x.gif")
    monkeypatch.undo()
    with pytest.raises(UsageError, match="unsupported"):
        outputs.write_animation(tmp_path / "x.bmp", [Image.new("RGB", (2, 2))])


def test_explanation_gif_has_one_frame_per_layer(vgg16: torch.nn.Module, photo: np.ndarray, tmp_path: Path) -> None:
    exp = layerscope.explain(vgg16, photo)
    out = exp.save(tmp_path / "tour.gif")
    n, durations, loop, size = read_gif(out)
    h, w = render.display_size(photo.shape[:2])
    assert n == 13 and durations == [500] * 13 and loop == 0
    assert size[0] == w + 2 * render.MARGIN and size[1] >= h + 100
    assert len(exp.images) == 1 and exp.images[0].shape == photo.shape
    # The top-left of the overlay (inside the margin) is a blend of the ORIGINAL photo.
    frames = exp.frames(alpha=0.0)
    first = np.asarray(frames[0])
    m = render.MARGIN
    base = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(first[m : m + h, m : m + w], base)
    html = exp._repr_html_()
    assert html.startswith('<img src="data:image/gif;base64,')


def test_npz_holds_the_raw_maps(vgg16: torch.nn.Module, photo: np.ndarray, tmp_path: Path) -> None:
    exp = layerscope.explain(vgg16, [photo, photo[::-1].copy()], layers="block5_*")
    p = exp.save(tmp_path / "maps.npz")
    with np.load(p) as z:
        assert list(z["layers"]) == exp.layers
        np.testing.assert_array_equal(z["cam/block5_conv3"], exp.cams["block5_conv3"])
        assert z["cam/block5_conv3"].shape == (2, 14, 14)
