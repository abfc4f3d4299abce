"""Bad and unusual input images: one clear error each, or a correct upright RGB image."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import inputs
from layerscope.errors import InputImageError


def test_missing_empty_directory_and_non_image(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match="no such file"):
        inputs.load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputImageError, match="empty"):
        inputs.load_image(tmp_path / "empty.png")
    with pytest.raises(InputImageError, match="directory"):
        inputs.load_image(tmp_path)
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    with pytest.raises(InputImageError, match="not an image"):
        inputs.load_image(tmp_path / "notes.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, photo: np.ndarray, fmt: str) -> None:
    p = tmp_path / f"photo.{fmt.lower()}"
    Image.fromarray(photo).resize((256, 256)).save(p, format=fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match="truncated or corrupt"):
        inputs.load_image(p)


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 6000×6000 grey PNG compresses to a few KB; lower the limit instead of using GBs.
    p = tmp_path / "bomb.png"
    Image.new("L", (6000, 6000)).save(p)
    assert p.stat().st_size < 200_000
    monkeypatch.setattr(inputs, "MAX_PIXELS", 10_000_000)
    with pytest.raises(InputImageError, match="decompression bomb"):
        inputs.load_image(p)
    # Pillow's own bomb check (its limit below ours) is turned into the same error.
    monkeypatch.setattr(inputs, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(InputImageError, match="decompression bomb"):
        inputs.load_image(p)


def test_exif_rotation_gives_the_upright_image(tmp_path: Path) -> None:
    # Stored 40 wide × 20 high, red on the left; EXIF orientation 6 = rotate 90° clockwise
    # to display, so the upright picture is 20 wide × 40 high with red on top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    p = tmp_path / "rotated.jpg"
    im.save(p, exif=exif, quality=100)
    up = inputs.load_image(p)
    assert up.shape == (40, 20, 3)
    assert up[5, 10, 0] > 200 and up[5, 10, 2] < 60  # top is red
    assert up[35, 10, 2] > 200 and up[35, 10, 0] < 60  # bottom is blue


def test_image_modes(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    cases = {
        "L": Image.fromarray(np.full((8, 8), 77, np.uint8), "L"),
        "LA": Image.fromarray(np.dstack([np.full((8, 8), 77, np.uint8), np.full((8, 8), 255, np.uint8)]), "LA"),
        "RGBA": Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)]), "RGBA"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
    }
    for mode, im in cases.items():
        p = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        im.save(p)
        out = inputs.load_image(p)
        assert out.shape == (8, 8, 3) and out.dtype == np.uint8, mode
    assert inputs.load_image(tmp_path / "L.png")[0, 0].tolist() == [77, 77, 77]
    assert inputs.load_image(tmp_path / "RGBA.png")[0, 0].tolist() == [200, 0, 0]
    # Transparent pixels composite over white, not black.
    clear = Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA")
    clear.save(tmp_path / "clear.png")
    assert inputs.load_image(tmp_path / "clear.png")[0, 0].tolist() == [255, 255, 255]
    # P with a transparent palette entry.
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=0)
    out = inputs.load_image(tmp_path / "p.png")
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [10, 200, 30]


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    a = np.array([[0, 32768], [65535, 16384]], dtype=np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    out = inputs.load_image(p)[..., 0]
    assert out.tolist() == [[0, 128], [255, 64]]


def test_animated_gives_first_frame_and_warns(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = inputs.load_image(p)
    assert any("animated" in str(x.message) for x in w)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 50


def test_arrays_and_pil_images() -> None:
    a = np.zeros((5, 6, 3), np.uint8)
    assert inputs.as_rgb_array(a).shape == (5, 6, 3)
    assert inputs.as_rgb_array(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert inputs.as_rgb_array(np.ones((5, 6, 3), np.float32))[0, 0].tolist() == [255, 255, 255]
    assert inputs.as_rgb_array(Image.new("L", (6, 5))).shape == (5, 6, 3)
    with pytest.raises(InputImageError, match="uint8"):
        inputs.as_rgb_array(np.full((5, 6, 3), 300, np.int32))
    with pytest.raises(InputImageError, match="cannot use"):
        inputs.as_rgb_array(42)


def test_preprocess_resizes_and_normalises() -> None:
    prep = inputs.Preprocess(size=(4, 6), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    x = prep([np.full((8, 12, 3), 255, np.uint8)])
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [2.0, 1.0, 0.5])


# ---------------------------------------------------------------- array dtype rules (issue 9 #17)


def test_float_rgba_in_unit_range_keeps_its_colours() -> None:
    a = np.zeros((2, 2, 4), np.float32)
    a[..., 0] = 0.8  # red 204
    a[..., 3] = 1.0  # opaque
    a[1, 1, 3] = 0.0  # one transparent pixel: white
    out = inputs.as_rgb_array(a)
    assert out[0, 0].tolist() == [204, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_uint16_is_scaled_not_wrapped() -> None:
    a = np.array([[0, 300], [32768, 65535]], dtype=np.uint16)
    out = inputs.as_rgb_array(a)[..., 0]
    # 300 / 65535 * 255 = 1.17 → 1 (wrapping would give 300 mod 256 = 44)
    assert out.tolist() == [[0, 1], [128, 255]]


def test_nan_float_and_out_of_range_are_clear_errors() -> None:
    a = np.full((3, 3, 3), 0.5, np.float64)
    a[1, 1, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        with pytest.raises(InputImageError, match="NaN"):
            inputs.as_rgb_array(a)
    with pytest.raises(InputImageError, match=r"\[0, 1\]"):
        inputs.as_rgb_array(np.full((3, 3, 3), 2.0))
    with pytest.raises(InputImageError, match=r"0\.\.255"):
        inputs.as_rgb_array(np.full((3, 3), -1, np.int16))
    assert inputs.as_rgb_array(np.full((2, 2), 200, np.int64))[0, 0].tolist() == [200, 200, 200]
    assert inputs.as_rgb_array(np.ones((2, 2), bool))[0, 0].tolist() == [255, 255, 255]


def test_empty_array_and_mode_La_are_handled() -> None:
    with pytest.raises(InputImageError, match="empty"):
        inputs.as_rgb_array(np.zeros((0, 0, 3), np.uint8))
    la = Image.fromarray(np.dstack([np.full((4, 4), 90, np.uint8), np.full((4, 4), 255, np.uint8)]), "LA")
    premultiplied = la.convert("La")
    assert premultiplied.mode == "La"
    assert inputs.as_rgb_array(premultiplied)[0, 0].tolist() == [90, 90, 90]


# ---------------------------------------------------------------- allowed formats (issue 9 #18)


def test_postscript_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    calls: list[object] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    p = tmp_path / "picture.png"  # the extension does not matter: the content is EPS
    p.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nnewpath 0 0 moveto 10 10 lineto stroke\n"
    )
    with Image.open(p) as im:  # Pillow alone would take it for an EPS picture
        assert im.format == "EPS"
    with pytest.raises(InputImageError, match="allowed format"):
        inputs.load_image(p)
    assert calls == []


# ---------------------------------------------------------------- exact inverses (issue 9 #7)


def test_preprocess_round_trip_is_exact(photo: np.ndarray) -> None:
    prep = inputs.Preprocess(size=None)
    x = prep([photo, photo[::-1]])
    back = prep.invert(x)
    assert back.shape == (2, *photo.shape) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[0], photo)
    np.testing.assert_array_equal(back[1], photo[::-1])
    # one (C, H, W) input, and through display_from_tensor in either layout
    np.testing.assert_array_equal(inputs.display_from_tensor(x[0], prep), photo)
    np.testing.assert_array_equal(inputs.display_from_tensor(x[0].transpose(1, 2, 0), prep), photo)
    one = inputs.Preprocess(size=None, mean=(0.5,), std=(0.25,))  # one value for every channel
    assert inputs.Preprocess(mean=(0.5,)).mean == (0.5, 0.5, 0.5) and inputs.Preprocess(std=(2,)).std == (2.0,) * 3
    np.testing.assert_array_equal(inputs.display_from_tensor(one([photo])[0], one), photo)


def test_caffe_round_trip_is_exact_and_not_bgr(photo: np.ndarray) -> None:
    prep = inputs.CaffePreprocess(size=None)
    x = prep([photo])  # what keras.applications.vgg16.preprocess_input gives: BGR, means subtracted
    np.testing.assert_allclose(x[0, ..., 0], photo[..., 2] - 103.939, atol=1e-4)
    np.testing.assert_array_equal(prep.invert(x)[0], photo)
    shown = inputs.display_from_tensor(x[0], prep)
    np.testing.assert_array_equal(shown, photo)  # not a blue (BGR) picture, not a stretched one


def test_prepare_batch_recovers_the_recipe_picture_from_its_tensor(photo: np.ndarray) -> None:
    prep = inputs.CaffePreprocess(size=(64, 80))
    x, shown = inputs.prepare_batch(prep([photo]), prep)
    assert x.shape == (1, 64, 80, 3)
    np.testing.assert_array_equal(shown[0], photo)
    # images (not tensors) come back as given, with the model input made from them
    x2, originals = inputs.prepare_batch([photo], inputs.Preprocess(size=(32, 40)))
    assert x2.shape == (1, 3, 32, 40) and originals[0] is not None
    np.testing.assert_array_equal(originals[0], photo)
    # an unknown preprocessing: min-max stretched, never an error
    stretched = inputs.display_from_tensor(np.linspace(-3, 5, 3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5), None)
    assert stretched.min() == 0 and stretched.max() == 255


def test_bytes_get_the_checks_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image's bytes (a table cell, a tar member, an object) are read as a file is."""
    import io

    rgb = np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    np.testing.assert_array_equal(inputs.load_image(buf.getvalue()), rgb)
    with pytest.raises(InputImageError, match=r"^cell\[3\]: the file is empty"):
        inputs.load_image(b"", name="cell[3]")
    with pytest.raises(InputImageError, match="cell: not an image file"):
        inputs.load_image(b"%!PS-Adobe-3.0 EPSF", name="cell")
    with pytest.raises(InputImageError, match="more than the 100 allowed"):
        inputs.load_image(buf.getvalue(), name="cell", max_bytes=100)
    monkeypatch.setenv("LAYERSCOPE_MAX_PIXELS", "100")
    with pytest.raises(InputImageError, match="decompression bomb"):
        inputs.load_image(buf.getvalue())
    with pytest.raises(InputImageError, match="1,099,511,627,776 bytes"):
        inputs.check_image_size(1 << 40, "member")  # a declared size, checked before reading
