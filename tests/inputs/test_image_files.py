"""The one folder rule (``layerscope.inputs.image_files``) and the checks before a file is
read (``check_image_file``): FIFO, device, huge sparse file, permission denied."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import inputs
from layerscope.errors import InputImageError, UsageError
from layerscope.inputs import IMAGE_EXTENSIONS, check_image_file, image_files, load_image


def _png(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    return p


def test_sorted_recursive_counts_other_files(tmp_path: Path) -> None:
    for rel in ("b.png", "A.JPG", "sub/c.png", "sub/deeper/d.tiff", ".hidden.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")  # the rule is by name; nothing is read
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub" / "data.csv").write_text("x")
    found = image_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found.files] == [
        "A.JPG",
        "b.png",
        "sub/c.png",
        "sub/deeper/d.tiff",
    ]
    assert found.others == 2 and found.unreadable == []
    flat = image_files(tmp_path, recursive=False)
    assert [p.name for p in flat.files] == ["A.JPG", "b.png"] and flat.others == 1
    assert ".png" in IMAGE_EXTENSIONS and ".tif" in IMAGE_EXTENSIONS
    with pytest.raises(UsageError, match="no such folder"):
        image_files(tmp_path / "nope")


def test_symlink_loop_is_not_followed(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "x.png")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    found = image_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found.files] == ["a/x.png"]


def test_unreadable_subfolder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _png(tmp_path / "ok.png")
    (tmp_path / "locked").mkdir()
    _png(tmp_path / "locked" / "y.png")
    real = os.scandir

    def scandir(path):  # what a chmod 000 folder does for a non-root user
        if isinstance(path, (str, os.PathLike)) and Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    found = image_files(tmp_path)
    assert [p.name for p in found.files] == ["ok.png"]
    assert found.unreadable == [tmp_path / "locked"]


def test_fifo_device_and_sparse_file_refused_fast(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(3 * 1024**3)  # 3 GB, no block written
    t0 = time.monotonic()
    with pytest.raises(InputImageError, match="not a regular file"):
        load_image(fifo)  # would block forever if opened
    with pytest.raises(InputImageError, match="not a regular file"):
        load_image("/dev/zero")
    with pytest.raises(InputImageError, match=r"3,221,225,472 bytes, more than the 536,870,912 allowed"):
        load_image(sparse)
    assert time.monotonic() - t0 < 2.0
    assert check_image_file(_png(tmp_path / "ok.png")) == (tmp_path / "ok.png").stat().st_size


def test_size_and_pixel_caps_are_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "img.png"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(p)
    size = p.stat().st_size
    with pytest.raises(InputImageError, match=f"{size:,} bytes, more than the {size - 1:,} allowed"):
        load_image(p, max_bytes=size - 1)
    monkeypatch.setenv("LAYERSCOPE_MAX_FILE_BYTES", str(size - 1))
    with pytest.raises(InputImageError, match="LAYERSCOPE_MAX_FILE_BYTES"):
        load_image(p)
    monkeypatch.delenv("LAYERSCOPE_MAX_FILE_BYTES")
    with pytest.raises(InputImageError, match="20×10 pixels is more than the 199 allowed"):
        load_image(p, max_pixels=199)
    monkeypatch.setenv("LAYERSCOPE_MAX_PIXELS", "200")
    assert load_image(p).shape == (10, 20, 3)  # exactly at the cap is allowed


def test_permission_denied_is_said_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _png(tmp_path / "secret.png")
    monkeypatch.setattr(inputs.os, "access", lambda path, mode: False)  # root reads everything: pretend
    with pytest.raises(InputImageError, match=r"secret\.png: permission denied") as e:
        load_image(p)
    assert "corrupt" not in str(e.value)
