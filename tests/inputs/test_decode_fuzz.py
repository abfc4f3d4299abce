"""Seeded fuzzing of the image decoder: whatever a mutated file makes Pillow raise
(TypeError, IndexError, struct.error, ValueError, OSError, …), ``load_image`` raises an
``InputImageError`` naming the file, and nothing else escapes."""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope.errors import InputImageError
from layerscope.inputs import load_image

FORMATS = {"png": "PNG", "gif": "GIF", "tif": "TIFF", "jpg": "JPEG", "bmp": "BMP"}
CASES_PER_FORMAT = 80  # 400 files, about a second


def _seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    out = {}
    for ext, fmt in FORMATS.items():
        buf = io.BytesIO()
        im = Image.fromarray(rgb)
        if fmt == "GIF":  # two frames: n_frames and seek are exercised
            im.convert("P").save(buf, fmt, save_all=True, append_images=[Image.fromarray(rgb[::-1]).convert("P")])
        else:
            im.save(buf, fmt)
        out[ext] = buf.getvalue()
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.5:
            b[i] = rng.randrange(256)  # a byte flipped (headers, counts, offsets)
        elif op < 0.7:
            b[i : i + 4] = rng.randbytes(4)
        elif op < 0.85:
            del b[i : i + rng.randint(1, 16)]
        else:
            b = b[: max(1, i)]  # truncated
    return bytes(b)


def test_no_decoder_exception_escapes(tmp_path: Path) -> None:
    rng = random.Random(18)
    escaped: list[str] = []
    refused = decoded = 0
    for ext, data in _seed_files().items():
        for k in range(CASES_PER_FORMAT):
            p = tmp_path / f"{ext}-{k}.{ext}"
            p.write_bytes(_mutate(data, rng))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rgb = load_image(p)
            except InputImageError as e:
                assert p.name in str(e)
                refused += 1
            except Exception as e:
                escaped.append(f"{p.name}: {type(e).__name__}: {e}")
            else:
                assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
                decoded += 1
    assert escaped == []
    assert refused > 50 and decoded > 50  # both paths exercised


@pytest.mark.parametrize("exc", [TypeError("Missing dimensions"), IndexError("list index out of range")])
def test_any_decoder_exception_is_a_corrupt_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc) -> None:
    """What a malformed TIFF / GIF makes Pillow raise (issue 18 item 6)."""
    p = tmp_path / "bad.tif"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(Image.Image, "load", boom)
    monkeypatch.setattr("PIL.TiffImagePlugin.TiffImageFile.load", boom)
    with pytest.raises(InputImageError, match=rf"bad.tif: a corrupt image \({type(exc).__name__}"):
        load_image(p)
