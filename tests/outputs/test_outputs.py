"""outputs: the writer registry, the cheap checks, GIF/APNG/WebP, the .npz manifest, and
Explanation.save/frames/repr on a hand-made explanation (no model needed)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import atomic, outputs, render
from layerscope.errors import OutputError, UsageError
from layerscope.explanation import Explanation
from layerscope.info import ModelInfo
from layerscope.render import RenderOptions


def make_exp(n: int = 2, method: str = "gradcam", note: str | None = None) -> Explanation:
    rng = np.random.default_rng(0)
    layers = ["conv_a", "conv_b", "conv_c"]
    sizes = {"conv_a": (8, 10), "conv_b": (4, 5), "conv_c": (2, 3)}
    cams = {k: rng.random((n, *s)).astype(np.float32) for k, s in sizes.items()}
    images = []
    for i in range(n):
        img = np.zeros((32, 40, 3), np.uint8)
        img[..., i % 3] = 200
        images.append(img)
    return Explanation(
        layers=layers,
        cams=cams,
        shapes={k: (16, *s) for k, s in sizes.items()},
        targets=np.arange(n) % 3,
        scores=np.linspace(1, 2, n).astype(np.float32),
        probabilities=np.linspace(0.87, 0.5, n).astype(np.float32),
        flat={k: np.zeros(n, bool) for k in layers},
        images=images,
        method=method,
        class_names=["tabby", "arrow", "ring"],
        info=ModelInfo(name="toy", class_names=("tabby", "arrow", "ring"), note=note),
    )


def read_anim(path: Path) -> tuple[int, list[int], tuple[int, int]]:
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()  # WebP sets a frame's duration when it is decoded
            durations.append(im.info["duration"])
        return im.n_frames, durations, im.size


# --- the registry and the cheap checks ---------------------------------------------------------


def test_writer_for_lists_the_extensions(tmp_path: Path) -> None:
    assert outputs.writer_for("a.GIF") is outputs.WRITERS[".gif"]
    for bad in ("x.jpg", "noext"):
        with pytest.raises(UsageError, match=r"use one of \.gif, \.png, \.webp, \.npz"):
            outputs.writer_for(tmp_path / bad)
    assert {".gif", ".png", ".webp", ".npz"} <= set(outputs.extensions())


def test_check_output_does_every_cheap_check_and_writes_nothing(tmp_path: Path) -> None:
    assert outputs.check_path(tmp_path / "a.gif") == [tmp_path / "a.gif"]
    assert outputs.check_path(tmp_path / "a.gif", n_images=2) == [tmp_path / "a_0.gif", tmp_path / "a_1.gif"]
    assert outputs.check_path(tmp_path / "a.npz", n_images=2) == [tmp_path / "a.npz"]
    (tmp_path / "a_1.gif").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"a_1\.gif already exists"):
        outputs.check_path(tmp_path / "a.gif", n_images=2)
    with pytest.raises(OutputError, match="does not exist"):
        outputs.check_path(tmp_path / "no" / "a.gif")
    big = RenderOptions(max_side=8192, side_by_side=True)
    with pytest.raises(UsageError, match=r"WebP animation allows \(16,383 per side\); lower max_side"):
        outputs.check_path(tmp_path / "a.webp", big)
    outputs.check_path(tmp_path / "a.gif", big)  # GIF allows 65,535
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_1.gif"]


# --- animations --------------------------------------------------------------------------------


def test_gif_keeps_identical_frames_and_loops(tmp_path: Path) -> None:
    same = Image.new("RGB", (20, 10), (10, 20, 30))
    other = Image.new("RGB", (20, 10), (200, 20, 30))
    p = outputs.write_animation(tmp_path / "a.gif", [same, same, same, other], duration=250)
    n, durations, size = read_anim(p)
    assert (n, durations, size) == (4, [250] * 4, (20, 10))
    with Image.open(p) as im:
        assert im.info["loop"] == 0
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


def test_gif_palette_from_a_sample_of_large_frames_drawn_twice() -> None:
    import io

    calls = []

    def frames():  # type: ignore[no-untyped-def]
        calls.append(1)
        for c in ((255, 0, 0), (0, 0, 255)):
            a = np.zeros((1200, 1000, 3), np.uint8)
            a[:, :500] = c
            yield Image.fromarray(a)

    buf = io.BytesIO()
    assert outputs.write_gif(buf, frames, 100, n_frames=2) == 2
    assert len(calls) == 2  # one pass for the palette, one to write
    buf.seek(0)
    with Image.open(buf) as im:
        im.seek(1)
        assert im.convert("RGB").getpixel((10, 10)) == (0, 0, 255)


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
    with pytest.raises(RuntimeError), atomic.atomic_file(p) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_unwritable_or_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        atomic.check_writable(tmp_path / "no" / "x.gif")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="does not exist"):
        atomic.check_writable(tmp_path / "file.txt" / "x.gif")
    # Tests run as root in CI, where permission bits are not enforced: simulate the check.
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="not writable"):
        atomic.check_writable(tmp_path / "x.gif")
    monkeypatch.undo()
    with pytest.raises(UsageError, match="unsupported"):
        outputs.write_animation(tmp_path / "x.bmp", [Image.new("RGB", (2, 2))])


@pytest.mark.parametrize("ext", [".gif", ".png", ".webp"])
def test_every_animation_writer_honours_the_duration(tmp_path: Path, ext: str) -> None:
    exp = make_exp(1)
    p = exp.save(tmp_path / f"a{ext}", duration=120)
    n, durations, size = read_anim(p)
    assert n == 3 and durations == [120] * 3 and size == exp.frames()[0].size
    with Image.open(p) as im:
        im.seek(2)
        got = np.asarray(im.convert("RGB")).astype(int)
    want = np.asarray(exp.frames()[2]).astype(int)
    if ext == ".gif":  # 256 colours: close on average
        assert np.abs(got - want).mean() < 3
    else:  # lossless
        assert np.array_equal(got, want)


def test_durations_below_the_minimum_are_refused_and_gif_rounds_to_10_ms(tmp_path: Path) -> None:
    exp = make_exp(1)
    for bad in (0, 5, 9):
        with pytest.raises(UsageError, match="between 10 and"):
            exp.save(tmp_path / "a.gif", duration=bad)
    with pytest.raises(UsageError, match="between 10 and"):
        outputs.write_animation(tmp_path / "b.gif", [Image.new("RGB", (2, 2))], duration=5)
    assert not list(tmp_path.iterdir())
    with pytest.warns(UserWarning, match="15 ms is written as 20 ms"):
        p = exp.save(tmp_path / "a.gif", duration=15)
    assert read_anim(p)[1] == [20] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = exp.save(tmp_path / "a.png", duration=15)  # APNG keeps milliseconds
    assert read_anim(p)[1] == [15] * 3


# --- Explanation.save / frames / repr --------------------------------------------------------------


def test_save_writes_one_file_per_image_never_dropping_one(tmp_path: Path) -> None:
    exp = make_exp(2)
    written = exp.save(tmp_path / "a.gif")
    assert written == [tmp_path / "a_0.gif", tmp_path / "a_1.gif"]
    for i, p in enumerate(written):
        with Image.open(p) as im:
            assert im.n_frames == 3
            m = render.MARGIN
            px = im.convert("RGB").getpixel((m + 2, m + 2))
        ref = np.asarray(exp.frames(i)[0])[m + 2, m + 2]
        assert np.abs(np.array(px) - ref).max() < 30  # image i's colours, not image 0's
    assert exp.save(tmp_path / "b.gif", index=1) == tmp_path / "b.gif"
    assert not (tmp_path / "b_0.gif").exists()
    with pytest.raises(UsageError, match="out of range for 2 images"):
        exp.save(tmp_path / "c.gif", index=2)
    with pytest.raises(OutputError, match="already exists"):
        exp.save(tmp_path / "a.gif")  # a_0.gif exists: refused before anything is drawn


def test_render_options_travel_as_one_object_or_as_keywords(tmp_path: Path) -> None:
    exp = make_exp(1)
    opts = RenderOptions(colormap="viridis", alpha=0.3, scale="shared", caption="recipe")
    a = [np.asarray(f) for f in exp.frames(0, opts)]
    b = [np.asarray(f) for f in exp.frames(0, colormap="viridis", alpha=0.3, scale="shared", caption="recipe")]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], np.asarray(exp.frames(0)[0])[: a[0].shape[0], : a[0].shape[1]])
    p = exp.save(tmp_path / "x.gif", colormap="viridis", alpha=0.3, scale="shared", caption="recipe", duration=200)
    assert read_anim(p)[1] == [200] * 3
    with pytest.raises(UsageError, match="unknown render option"):
        exp.save(tmp_path / "y.gif", colour="red")


def test_repr_is_one_line() -> None:
    exp = make_exp(1)
    assert repr(exp) == "Explanation(3 layers, gradcam, 1 image, class 'tabby' p=0.87)"
    two = make_exp(2, note="RANDOM WEIGHTS")
    want = "Explanation(3 layers, gradcam, 2 images, classes 'tabby' p=0.87, 'arrow' p=0.50, RANDOM WEIGHTS)"
    assert repr(two) == want
    eigen = make_exp(1, method="eigencam")
    assert repr(eigen) == "Explanation(3 layers, eigencam, 1 image, class-agnostic, top-1 'tabby' p=0.87)"
    assert "\n" not in repr(make_exp(5))


def test_frames_say_class_agnostic_the_note_and_the_counter() -> None:
    eigen = make_exp(1, method="eigencam", note="demo model (10 synthetic shapes)")
    texts = eigen.frame_texts(0)
    assert texts[1].counter == "2/3" and texts[0].note == "demo model (10 synthetic shapes)"
    assert "class-agnostic" in texts[0].lines[1] and not texts[0].lines[1].startswith("Class:")
    grad = make_exp(1)
    assert grad.frame_texts(0)[0].lines[1].startswith("Class: tabby (p = 0.87)")
    assert grad.frame_texts(0)[0].note is None
    from layerscope.info import RANDOM_WEIGHTS

    rnd = make_exp(1)
    rnd.info = ModelInfo(warning=RANDOM_WEIGHTS)
    assert rnd.note == "RANDOM WEIGHTS"
    a = np.asarray(eigen.frames(0)[0]).astype(int)
    amber = np.all(np.abs(a - np.array(render.drawing.NOTE)) < 40, axis=2)
    assert amber.sum() > 50  # the note is drawn


def test_recipe_caption_keeps_the_shape_whole() -> None:
    exp = make_exp(1)
    exp.shapes["conv_a"] = (1024, 1024, 512)
    (line,) = exp.caption("conv_a", style="recipe")
    assert line == "Layer: conv_a, Output size: (1024, 1024, 512)"
    from layerscope.render.text import font, wrap

    assert wrap(None, line, font(20), 150)[-1] == "(1024, 1024, 512)"


# --- raw maps -----------------------------------------------------------------------------------


def test_npz_holds_the_raw_maps_and_a_manifest(tmp_path: Path) -> None:
    exp = make_exp(2)
    exp.options = {"guided_grads": True}
    p = exp.save(tmp_path / "maps.npz")
    assert p == tmp_path / "maps.npz"
    with np.load(p) as z:
        assert list(z["layers"]) == exp.layers
        np.testing.assert_array_equal(z["cam/conv_b"], exp.cams["conv_b"])
        np.testing.assert_array_equal(z["targets"], exp.targets)
        man = json.loads(str(z["manifest"]))
    assert man == outputs.read_manifest(p)
    assert man["layers"] == exp.layers and man["shapes"]["conv_b"] == [16, 4, 5]
    assert man["map_shapes"]["conv_c"] == [2, 3]
    assert man["targets"] == [0, 1] and man["target_names"] == ["tabby", "arrow"]
    assert man["class_names"] == ["tabby", "arrow", "ring"] and man["method"] == "gradcam"
    assert man["method_options"] == {"guided_grads": True} and man["model"] == "toy"
    import layerscope

    assert man["versions"]["layerscope"] == layerscope.__version__ and man["versions"]["numpy"] == np.__version__
    one = exp.save(tmp_path / "one.npz", index=1)
    with np.load(one) as z:
        np.testing.assert_array_equal(z["cam/conv_a"], exp.cams["conv_a"][1:2])
        assert json.loads(str(z["manifest"]))["targets"] == [1]


def test_still_images_for_the_grid(tmp_path: Path) -> None:
    img = Image.new("RGB", (30, 20), (10, 200, 30))
    for ext in (".png", ".jpg", ".webp"):
        p = outputs.write_image(tmp_path / f"g{ext}", img)
        with Image.open(p) as im:
            assert im.size == (30, 20) and abs(im.convert("RGB").getpixel((5, 5))[1] - 200) < 8
    with pytest.raises(UsageError, match=r"unsupported image type \.gif"):
        outputs.check_image_output(tmp_path / "g.gif")
    with pytest.raises(OutputError, match=r"more than \.webp allows"):
        outputs.check_image_output(tmp_path / "big.webp", size=(20_000, 10))


def test_apng_is_written_frame_by_frame_and_read_back(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (9, 7), (i * 40, 10, 200 - i * 40)) for i in range(4)]
    p = outputs.write_animation(tmp_path / "a.png", [frames[0], frames[0], *frames[1:]], duration=70_000)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.is_animated and im.n_frames == 5 and im.info.get("loop") == 0
        got = []
        for i in range(5):
            im.seek(i)
            got.append((im.convert("RGB").getpixel((4, 3)), im.info["duration"]))
    assert got == [(f.getpixel((4, 3)), 70_000.0) for f in [frames[0], *frames]]


def test_captions_name_a_transformers_token_grid() -> None:
    exp = make_exp(1)
    assert exp.caption("conv_a")[0] == "Layer: conv_a · output 16x8x10"  # (C, h, w): the map is h×w
    exp.shapes["conv_b"] = (21, 384)  # 20 tokens + the class token, laid out as 4×5
    assert exp.caption("conv_b")[0] == "Layer: conv_b · output 21x384 · 4×5 token grid"
    exp.shapes["conv_c"] = (2, 3, 16)  # Keras layout (h, w, C)
    assert exp.caption("conv_c")[0] == "Layer: conv_c · output 2x3x16"
