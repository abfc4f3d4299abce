"""Loading images safely and turning them into a model's input.

Every bad file gives one :class:`~layerscope.errors.InputImageError` naming the problem:
missing, empty, not an image, truncated, too many pixels (decompression bomb). EXIF
orientation is applied, so maps line up with the upright photo; every mode (L, LA, P with
transparency, RGBA, CMYK, 16-bit) becomes 8-bit RGB; an animation gives its first frame
and a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from layerscope.errors import InputImageError, UsageError

#: Largest image accepted, in pixels (Pillow's own default limit is about 89 M).
MAX_PIXELS = 64_000_000

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes a model input: resize, scale to [0, 1], normalise.

    ``size`` is ``(height, width)``; ``None`` keeps each image's size.
    """

    size: tuple[int, int] | None = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def for_model(cls, model: Any) -> Preprocess:
        """The model's own ``layerscope_preprocess`` spec, or ImageNet at 224×224.

        A callable spec (e.g. the Keras recipe's caffe-style preprocessing) is returned as is.
        """
        spec = getattr(model, "layerscope_preprocess", None)
        if not spec:
            return cls()
        if callable(spec):
            return spec
        size = spec.get("size", (224, 224))
        return cls(
            size=tuple(size) if size is not None else None,
            mean=tuple(spec.get("mean", IMAGENET_MEAN)),
            std=tuple(spec.get("std", IMAGENET_STD)),
        )

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 3, H, W)`` float32, channels first, from uint8 ``(H, W, 3)`` images."""
        out = []
        for img in images:
            if self.size is not None and img.shape[:2] != tuple(self.size):
                pil = Image.fromarray(img).resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                img = np.asarray(pil)
            out.append(img)
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise UsageError(f"images of different sizes {sorted(shapes)} cannot form one batch")
        arr = np.stack(out).astype(np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as upright 8-bit RGB ``(H, W, 3)``.

    Raises:
        InputImageError: missing, empty, unreadable, truncated or oversized file.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputImageError(f"{p}: no such file")
    if os.path.isdir(p):
        raise InputImageError(f"{p}: is a directory, not an image file")
    if os.path.getsize(p) == 0:
        raise InputImageError(f"{p}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise InputImageError(
                        f"{p}: {w}×{h} pixels is more than the {MAX_PIXELS:,} allowed (a decompression bomb?)"
                    )
                if getattr(im, "n_frames", 1) > 1:
                    warnings.warn(
                        f"{p} is animated ({im.n_frames} frames); only the first is explained",
                        stacklevel=2,
                    )
                    im.seek(0)
                im.load()
                return to_rgb(im)
    except InputImageError:
        raise
    except UnidentifiedImageError:
        raise InputImageError(f"{p}: not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputImageError(f"{p}: too many pixels (a decompression bomb?): {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputImageError(f"{p}: cannot read the image (truncated or corrupt?): {e}") from None


def to_rgb(im: Image.Image) -> np.ndarray:
    """An upright 8-bit RGB array from any Pillow image mode.

    Transparent pixels are composited over white; 16- and 32-bit grey images are scaled
    down by their range, not clipped.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        lo = 0.0 if im.mode.startswith("I;16") else min(float(a.min()), 0.0)
        g = np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def as_rgb_array(image: Any) -> np.ndarray:
    """A path, PIL image or array as upright uint8 RGB ``(H, W, 3)``."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise InputImageError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {a.shape}")
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        if a.shape[2] == 4:
            a = to_rgb(Image.fromarray(a.astype(np.uint8), "RGBA"))
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating) and a.size and 0.0 <= a.min() and a.max() <= 1.0:
                a = (a * 255.0 + 0.5).astype(np.uint8)
            else:
                raise InputImageError(f"an image array must be uint8 (or float in [0, 1]), not {a.dtype}")
        return np.ascontiguousarray(a[:, :, :3])
    raise InputImageError(f"cannot use a {type(image).__name__} as an image")
