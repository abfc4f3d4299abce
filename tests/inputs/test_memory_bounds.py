"""Memory on hostile images is bounded (issue 18 item 8): a 186 KB PNG of 7,999² pixels
decodes within 600 MB peak RSS; a 1×60,000,000 strip is refused before it is decoded; a
batch payload keeps the display image at its drawn size, never the full image."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope.batch.capture import display_image
from layerscope.errors import InputImageError
from layerscope.inputs import load_image

PEAK = textwrap.dedent(
    """
    import sys
    from layerscope.inputs import load_image
    a = load_image(sys.argv[1])
    assert a.shape == (7999, 7999, 3) and a.dtype.name == "uint8"
    # VmHWM: this process's own peak (getrusage's ru_maxrss keeps the forking parent's peak across exec)
    print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
def test_a_7999_square_png_decodes_within_600_mb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (7999, 7999)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 250_000
    out = subprocess.run([sys.executable, "-c", PEAK, str(bomb)], capture_output=True, text=True, check=True)
    peak_mb = int(out.stdout.split()[-1]) / 1024
    print(f"peak RSS decoding 7999² PNG: {peak_mb:.0f} MB")
    assert peak_mb < 600  # was 1,130 MB (three full-size copies while converting)


def test_a_long_strip_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    strip = tmp_path / "strip.png"
    Image.new("RGB", (70_000, 1)).save(strip)
    with pytest.raises(InputImageError, match=r"70000×1 pixels: a side longer than the 65,535 allowed"):
        load_image(strip)
    monkeypatch.setenv("LAYERSCOPE_MAX_IMAGE_SIDE", "70000")
    assert load_image(strip).shape == (1, 70_000, 3)


def test_to_rgb_in_tiles_equals_pillow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from layerscope import inputs

    monkeypatch.setattr(inputs, "TILE_PIXELS", 7)  # many tiles, rows split into columns
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (5, 9, 4), dtype=np.uint8)
    p = tmp_path / "x.png"
    Image.fromarray(rgba, "RGBA").save(p)
    got = load_image(p)
    bg = Image.new("RGBA", (9, 5), (255, 255, 255, 255))
    want = np.asarray(Image.alpha_composite(bg, Image.fromarray(rgba, "RGBA")).convert("RGB"))
    np.testing.assert_array_equal(got, want)


def test_payload_image_is_the_drawn_size() -> None:
    big = np.zeros((3000, 1200, 3), np.uint8)
    small = display_image(big, 512)
    assert small.shape == (512, 205, 3)  # 3000→512, 1200·512/3000 = 204.8 → 205
    tiny = np.zeros((32, 32, 3), np.uint8)
    assert display_image(tiny, 512) is tiny  # never enlarged (the renderer enlarges when drawing)
    assert display_image(big, None) is big


RESIZE_PEAK = textwrap.dedent(
    """
    import numpy as np
    from layerscope.inputs import Preprocess
    a = np.zeros((7999, 7999, 3), np.uint8)
    a[2000:6000, 2000:6000] = (200, 30, 30)
    before = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    x = Preprocess(size=(224, 224))([a])
    assert x.shape == (1, 3, 224, 224)
    after = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(after - before)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
def test_the_model_input_of_a_64_megapixel_photo_costs_one_channel_more() -> None:
    """Resizing to the model input copies one channel at a time (64 MB for 7,999² px), not
    the RGB image into PIL at 4 bytes a pixel (256 MB): `tour` of that photo peaks at 619 MB,
    was 728 MB."""
    out = subprocess.run([sys.executable, "-c", RESIZE_PEAK], capture_output=True, text=True, check=True)
    extra_mb = int(out.stdout.split()[-1]) / 1024
    print(f"peak RSS added by the resize of a 7999² photo: {extra_mb:.0f} MB")
    assert extra_mb < 100  # one 64 MB channel; the whole image in PIL was 256 MB


TOUR_PEAK = textwrap.dedent(
    """
    import sys
    from layerscope import cli
    assert cli.main(["tour", sys.argv[1], "-o", sys.argv[2]]) == 0
    assert "sympy" not in sys.modules  # building the model from the meta device needs none of it
    print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
def test_tour_of_a_7999_square_png_peaks_within_600_mb(tmp_path: Path) -> None:
    """The whole `layerscope tour` of a 186 KB PNG of 7,999² px: was about 1.2 GB, then 728 MB."""
    a = np.zeros((7999, 7999, 3), np.uint8)
    a[2000:6000, 2000:6000] = (200, 30, 30)
    bomb = tmp_path / "bomb.png"
    Image.fromarray(a).save(bomb, optimize=True)
    del a
    assert bomb.stat().st_size < 250_000
    out = subprocess.run(
        [sys.executable, "-c", TOUR_PEAK, str(bomb), str(tmp_path / "t.gif")],
        capture_output=True,
        text=True,
        check=True,
    )
    peak_mb = int(out.stdout.split()[-1]) / 1024
    print(f"peak RSS of tour on a 7999² PNG: {peak_mb:.0f} MB")
    assert peak_mb < 600
