"""Loading images safely and turning them into a model's input.

Every bad file gives one :class:`~layerscope.errors.InputImageError` naming the problem:
missing, empty, not an image, truncated, too many pixels (decompression bomb). EXIF
orientation is applied, so maps line up with the upright photo; every mode (L, LA, P with
transparency, RGBA, CMYK, 16-bit) becomes 8-bit RGB; an animation gives its first frame
and a warning.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from layerscope.errors import InputImageError, UsageError
from layerscope.resize import resize_photo

#: Largest image accepted, in pixels (Pillow's own default limit is about 89 M); a decoded
#: image of this size is 192 MB of RGB. Override with ``LAYERSCOPE_MAX_PIXELS`` or ``max_pixels=``.
MAX_PIXELS = 64_000_000
#: Longest side accepted, in pixels (JPEG's own limit): a 1×60,000,000 strip is refused before
#: it is decoded (Pillow's PNG decoder holds two full rows). Override: ``LAYERSCOPE_MAX_IMAGE_SIDE``.
MAX_IMAGE_SIDE = 65_535
#: Largest image file accepted, in bytes (512 MiB), checked before a byte is read. Override
#: with ``LAYERSCOPE_MAX_FILE_BYTES`` or ``max_bytes=``.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: File extensions that name an image file (lower case): the one folder rule of every command.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize_batch(images: Sequence[np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
    """uint8 ``(H, W, 3)`` images resized (bilinear) to ``size`` = ``(H, W)`` and stacked."""
    out = [img if size is None or img.shape[:2] == tuple(size) else resize_photo(img, size) for img in images]
    if not out:
        raise UsageError("no image given")
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise UsageError(f"images of different sizes {sorted(shapes)} cannot form one batch")
    return np.stack(out)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes a model input: resize, scale to [0, 1], normalise.

    ``size`` is ``(height, width)``; ``None`` keeps each image's size. The result is
    ``(N, 3, H, W)`` float32, channels first; :meth:`invert` turns it back into the uint8 RGB
    picture exactly (what a map is drawn over when a caller passes a preprocessed tensor).
    """

    size: tuple[int, int] | None = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size is not None:
            size = tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < 1:
                raise UsageError(f"a preprocessing size is (height, width) in pixels, not {self.size!r}")
            object.__setattr__(self, "size", size)
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        mean = mean * len(std) if len(mean) == 1 else mean  # one value for every channel
        std = std * len(mean) if len(std) == 1 else std
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise UsageError(f"mean {self.mean} and std {self.std} must have one positive std per channel")

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 3, H, W)`` float32, channels first, from uint8 ``(H, W, 3)`` images."""
        arr = _resize_batch(images, self.size).astype(np.float32) / np.float32(255.0)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def invert(self, x: Any) -> np.ndarray:
        """The uint8 RGB picture(s) of a model input made by this preprocessing: ``(C, H, W)``
        → ``(H, W, 3)``, ``(N, C, H, W)`` → ``(N, H, W, 3)``. Exact for what :meth:`__call__`
        made (the round trip gives the resized image back, pixel for pixel)."""
        a = _as_float_array(x)
        if a.ndim not in (3, 4) or (a.shape[-3] != len(self.mean) and len(self.mean) != 1):
            raise UsageError(f"expected ({len(self.mean)}, H, W) or (N, {len(self.mean)}, H, W), not {a.shape}")
        a = np.moveaxis(a, -3, -1)
        a = (a * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)) * np.float32(255.0)
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        return _to_uint8(a[..., :3])


#: ``keras.applications.vgg16.preprocess_input``'s channel means ("caffe" style), in BGR order.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def caffe_preprocess(x: np.ndarray) -> np.ndarray:
    """``keras.applications.vgg16.preprocess_input`` for channels-last RGB in 0..255:
    RGB → BGR, then the ImageNet channel means (:data:`CAFFE_MEAN_BGR`) subtracted."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32))


@dataclass(frozen=True)
class CaffePreprocess:
    """uint8 RGB images → the Keras recipe's input: bilinear resize to ``size`` = ``(H, W)``,
    then :func:`caffe_preprocess`. Returns ``(N, H, W, 3)`` float32 (channels last, BGR);
    :meth:`invert` gives the RGB picture back exactly."""

    size: tuple[int, int] | None = (224, 224)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return caffe_preprocess(_resize_batch(images, self.size))

    def invert(self, x: Any) -> np.ndarray:
        """``(H, W, 3)`` or ``(N, H, W, 3)`` BGR mean-subtracted input → uint8 RGB, exactly."""
        a = _as_float_array(x)
        if a.ndim not in (3, 4) or a.shape[-1] != 3:
            raise UsageError(f"expected a channels-last (H, W, 3) or (N, H, W, 3) input, not {a.shape}")
        return _to_uint8((a + np.asarray(CAFFE_MEAN_BGR, np.float32))[..., ::-1])


def _as_float_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray) and hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=np.float32)


def is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is an already preprocessed model input (a framework tensor, or a float
    numpy array of rank 4) rather than images."""
    mod = type(obj).__module__.split(".")[0]
    return mod in ("torch", "tensorflow", "jax", "jaxlib") or (
        isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and obj.ndim == 4
    )


def prepare_batch(images: Any, preprocess: Any) -> tuple[Any, list[np.ndarray]]:
    """The model input and the RGB pictures (uint8 ``(H, W, 3)``) to draw the maps over.

    Args:
        images: a path, PIL image or array, a list of them, or an already preprocessed
            tensor ``(N, C, H, W)`` (``(N, H, W, C)`` for a channels-last model).
        preprocess: turns a list of uint8 RGB arrays into the model input; for a tensor it
            is only used to recover the pictures (:func:`display_from_tensor`).
    """
    if is_tensor(images):
        x = images
        arr = _as_float_array(x)
        if arr.ndim == 3:
            arr = arr[None]
            x = x[None]
        if arr.ndim != 4:
            raise UsageError(f"a tensor input must be (N, C, H, W), not {tuple(arr.shape)}")
        return x, [display_from_tensor(a, preprocess) for a in arr]
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        images = [images]
    if not images:
        raise UsageError("no image given")
    rgb = [as_rgb_array(im) for im in images]
    return preprocess(rgb), rgb


def display_from_tensor(a: Any, preprocess: Any = None) -> np.ndarray:
    """The uint8 RGB picture of one preprocessed input ``(C, H, W)`` or ``(H, W, C)``.

    A preprocessing with an ``invert`` method (:class:`Preprocess`, :class:`CaffePreprocess`)
    is undone exactly; anything else is shown min-max stretched (its colours may be off).
    """
    a = _as_float_array(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise UsageError(f"one preprocessed input must be (C, H, W) or (H, W, C), not {a.shape}")
    channels_first = a.shape[0] in (1, 3, 4) and a.shape[0] < a.shape[-1]
    if isinstance(preprocess, Preprocess):
        chw = a if channels_first else a.transpose(2, 0, 1)
        if chw.shape[0] == len(preprocess.mean) or len(preprocess.mean) == 1:
            return preprocess.invert(chw)
    elif isinstance(preprocess, CaffePreprocess):
        hwc = a.transpose(1, 2, 0) if channels_first else a
        if hwc.shape[-1] == 3:
            return preprocess.invert(hwc)
    elif preprocess is not None and callable(getattr(preprocess, "invert", None)):
        return np.asarray(preprocess.invert(a), dtype=np.uint8)
    hwc = a.transpose(1, 2, 0) if channels_first else a
    lo, hi = float(np.nanmin(hwc)), float(np.nanmax(hwc))
    hwc = (hwc - lo) / (hi - lo) if hi > lo else np.zeros_like(hwc)
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    return _to_uint8(np.nan_to_num(hwc[..., :3]) * 255.0)


#: The image formats layerscope opens (Pillow's names). Anything else, EPS/PostScript (which
#: Pillow hands to Ghostscript) and PDF included, is refused before it is decoded.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO")


def _limit(value: int | None, env: str, default: int) -> int:
    text = os.environ.get(env, "").strip() if value is None else str(value)
    try:
        return int(float(text)) if text else default
    except ValueError:
        raise UsageError(f"{env}={text!r}: expected a whole number") from None


def check_image_file(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> int:
    """Check, before reading a byte, that ``path`` is a regular, non-empty file of at most
    ``max_bytes`` (default :data:`MAX_FILE_BYTES`); returns its size. A FIFO, a device
    (``/dev/zero``) or a huge sparse file is refused at once.

    Raises:
        InputImageError: missing, a folder, not a regular file, empty, too large, or not
            readable (permission denied).
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputImageError(f"{p}: no such file") from None
    except PermissionError:
        raise InputImageError(f"{p}: permission denied") from None
    except OSError as e:
        raise InputImageError(f"{p}: cannot read the file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputImageError(f"{p}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputImageError(f"{p}: not a regular file (a pipe, socket or device); give an image file")
    check_image_size(st.st_size, p, max_bytes)
    if not os.access(p, os.R_OK):
        raise InputImageError(f"{p}: permission denied")
    return int(st.st_size)


def check_image_size(size: int, name: str, max_bytes: int | None = None) -> int:
    """Check a declared size (a file's, an object's, a tar member's) before reading it: not
    empty, at most ``max_bytes`` (default :data:`MAX_FILE_BYTES`). Returns the cap."""
    cap = _limit(max_bytes, "LAYERSCOPE_MAX_FILE_BYTES", MAX_FILE_BYTES)
    if size == 0:
        raise InputImageError(f"{name}: the file is empty")
    if size > cap:
        msg = f"the file is {size:,} bytes, more than the {cap:,} allowed (set LAYERSCOPE_MAX_FILE_BYTES to allow more)"
        raise InputImageError(f"{name}: {msg}")
    return cap


def load_image(
    path: str | os.PathLike[str] | bytes, *, max_bytes: int | None = None, max_pixels: int | None = None, name: str = ""
) -> np.ndarray:
    """Read an image file, or an image's bytes (``name`` names them), as upright 8-bit RGB ``(H, W, 3)``.

    The file (or the bytes' size) is checked first (:func:`check_image_file`,
    :func:`check_image_size`); only the formats in :data:`IMAGE_FORMATS` are opened, and at
    most ``max_pixels`` (default :data:`MAX_PIXELS`) are decoded. Whatever exception the
    decoder raises on a malformed file becomes an :class:`~layerscope.errors.InputImageError`.

    Raises:
        InputImageError: missing, empty, unreadable, truncated, corrupt or oversized file, or
            a format that is not allowed.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        p, src = name or "<bytes>", io.BytesIO(path)
        check_image_size(len(path), p, max_bytes)
    else:
        p = src = os.fspath(path)
        check_image_file(p, max_bytes=max_bytes)
    limit = _limit(max_pixels, "LAYERSCOPE_MAX_PIXELS", MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src, formats=list(IMAGE_FORMATS)) as im:
                w, h = im.size
                if w * h > limit:
                    raise InputImageError(
                        f"{p}: {w}×{h} pixels is more than the {limit:,} allowed (a decompression bomb?)"
                    )
                side = _limit(None, "LAYERSCOPE_MAX_IMAGE_SIDE", MAX_IMAGE_SIDE)
                if max(w, h) > side:
                    msg = f"a side longer than the {side:,} allowed (set LAYERSCOPE_MAX_IMAGE_SIDE to allow more)"
                    raise InputImageError(f"{p}: {w}×{h} pixels: {msg}")
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    warnings.warn(f"{p} is animated ({frames} frames); only the first is explained", stacklevel=2)
                    im.seek(0)
                im.load()
                return to_rgb(im)
    except InputImageError:
        raise
    except UnidentifiedImageError:
        raise InputImageError(f"{p}: not an image file in an allowed format ({', '.join(IMAGE_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputImageError(f"{p}: too many pixels (a decompression bomb?): {e}") from None
    except MemoryError:
        raise InputImageError(f"{p}: not enough memory to decode the image") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise InputImageError(f"{p}: permission denied") from None
        raise InputImageError(f"{p}: cannot read the image (truncated or corrupt?): {_first_line(e)}") from None
    except Exception as e:  # Pillow raises TypeError, IndexError, struct.error … on malformed files
        raise InputImageError(f"{p}: a corrupt image ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


@dataclass
class ImageFiles:
    """What :func:`image_files` found in a folder.

    Attributes:
        files: the image files, sorted by their path relative to the folder.
        others: regular files skipped because their extension is not in :data:`IMAGE_EXTENSIONS`.
        unreadable: subfolders that could not be listed (permission denied …), skipped.
    """

    files: list[Path] = field(default_factory=list)
    others: int = 0
    unreadable: list[Path] = field(default_factory=list)


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """Whether a file name is an image's: an extension of :data:`IMAGE_EXTENSIONS`, not hidden."""
    name = os.path.basename(os.fspath(path))
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def image_files(folder: str | os.PathLike[str], *, recursive: bool = True) -> ImageFiles:
    """The image files in ``folder`` by the one folder rule of every command: by extension
    (:data:`IMAGE_EXTENSIONS`), hidden files skipped, sorted by relative POSIX path; with
    ``recursive``, subfolders too, each real folder once (a symlink loop is not followed).
    Non-image files are counted and unreadable subfolders listed, never silently dropped.

    Raises:
        UsageError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    found = ImageFiles()
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(d))
        except OSError:
            found.unreadable.append(d)
            continue
        for e in entries:
            try:
                if e.is_dir():
                    if recursive:
                        stack.append(Path(e.path))
                    continue
                regular = e.is_file()
            except OSError:
                regular = False
            if not regular or e.name.startswith("."):
                continue
            if is_image_name(e.name):
                found.files.append(Path(e.path))
            else:
                found.others += 1
    found.files.sort(key=lambda q: q.relative_to(root).as_posix())
    found.unreadable.sort()
    return found


#: Pixels converted at a time by :func:`to_rgb` (tiles of whole rows, or of a row's columns).
TILE_PIXELS = 1 << 20


def to_rgb(im: Image.Image) -> np.ndarray:
    """An upright 8-bit RGB array from any Pillow image mode.

    Transparent pixels are composited over white; 16- and 32-bit grey images are scaled
    down by their range, not clipped. The array is filled in tiles of :data:`TILE_PIXELS`,
    so converting costs the decoded image plus the array, never a second full-size copy.
    """
    if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: rotate (a copy) only when it says so
        im = ImageOps.exif_transpose(im)
    if im.width == 0 or im.height == 0:
        raise InputImageError(f"the image is empty ({im.width}×{im.height} pixels)")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise InputImageError("the image holds NaN or infinite values")
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        lo = 0.0 if im.mode.startswith("I;16") else min(float(a.min()), 0.0)
        g = np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    w, h = im.width, im.height
    out = np.empty((h, w, 3), np.uint8)
    rows, cols = max(1, TILE_PIXELS // w), min(w, TILE_PIXELS)
    for y in range(0, h, rows):
        for x in range(0, w, cols):
            tile = im.crop((x, y, min(w, x + cols), min(h, y + rows)))
            out[y : y + tile.height, x : x + tile.width] = _band_rgb(tile)
    return out


def _band_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts these only to LA / RGBA
        im = im.convert("LA" if im.mode == "La" else "RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def as_rgb_array(image: Any) -> np.ndarray:
    """A path, PIL image or array as upright uint8 RGB ``(H, W, 3)``.

    Arrays are ``(H, W)`` (grey), ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA,
    composited over white), and their values are read by dtype, one rule each:

    * ``uint8``: 0..255 as is; ``bool``: ``True`` is white.
    * ``uint16``: a 16-bit image, 0..65535 scaled to 0..255 (never wrapped).
    * other integers: must lie in 0..255.
    * floats: must be finite and in [0, 1] (alpha included), scaled to 0..255.

    Raises:
        InputImageError: an empty array, another shape, a value outside its dtype's range,
            NaN or infinity.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise InputImageError(f"cannot use a {type(image).__name__} as an image")


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputImageError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputImageError(f"the image array is empty: shape {a.shape}")
    a = _array_to_uint8(a)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 4:
        a = to_rgb(Image.fromarray(np.ascontiguousarray(a), "RGBA"))
    return np.ascontiguousarray(a)


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    """The dtype rules of :func:`as_rgb_array`."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise InputImageError(
                f"an integer ({a.dtype}) image array must hold values in 0..255, not {lo}..{hi}; "
                "pass uint8, uint16 (a 16-bit image) or floats in [0, 1]"
            )
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise InputImageError("the image array holds NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo < 0.0 or hi > 1.0:
            raise InputImageError(
                f"a float image array must hold values in [0, 1], not {lo:g}..{hi:g}; "
                "divide 0..255 data by 255 (or pass uint8)"
            )
        return np.rint(f * 255.0).astype(np.uint8)
    raise InputImageError(f"an image array must be uint8, uint16, another integer type or float, not {a.dtype}")
