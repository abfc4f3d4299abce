"""Still images (the layers × methods grid): PNG, JPEG or WebP by extension, atomically."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from layerscope.atomic import atomic_file, check_writable
from layerscope.errors import OutputError, UsageError

#: Extension → (Pillow format, largest side, save options).
IMAGE_FORMATS: dict[str, tuple[str, int, dict[str, object]]] = {
    ".png": ("PNG", 2**31 - 1, {}),
    ".jpg": ("JPEG", 65_500, {"quality": 92}),
    ".jpeg": ("JPEG", 65_500, {"quality": 92}),
    ".webp": ("WEBP", 16_383, {"lossless": True}),
}


def check_image_output(
    path: str | os.PathLike[str], overwrite: bool = False, size: tuple[int, int] | None = None
) -> Path:
    """Cheap checks for a still image: a known extension, a writable place and, when the
    ``(width, height)`` is known, within the format's limit."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_FORMATS:
        raise UsageError(f"{p}: unsupported image type {ext or '(none)'}; use one of {', '.join(IMAGE_FORMATS)}")
    if size is not None and max(size) > IMAGE_FORMATS[ext][1]:
        raise OutputError(
            f"{p}: {size[0]}×{size[1]} pixels is more than {ext} allows ({IMAGE_FORMATS[ext][1]:,} per side);"
            " use .png or a smaller cell"
        )
    return check_writable(p, overwrite)


def write_image(path: str | os.PathLike[str], image: Image.Image, overwrite: bool = False) -> Path:
    """Write a still image, the format chosen by extension (``.png``, ``.jpg``, ``.webp``)."""
    p = check_image_output(path, overwrite, image.size)
    fmt, _, extra = IMAGE_FORMATS[p.suffix.lower()]
    with atomic_file(p, overwrite) as f:
        image.convert("RGB").save(f, format=fmt, **extra)
    return p
