"""The one bilinear resize of the package, for numpy arrays and torch tensors.

Convention: **half-pixel centres** (``align_corners=False``), edges clamped, no antialiasing
when shrinking. Output pixel ``i`` of ``n_out`` samples the input at
``(i + 0.5) · n_in / n_out − 0.5``, clamped to ``[0, n_in − 1]``, and interpolates linearly
between the two nearest input pixels. It is the convention of
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` and of OpenCV's
``INTER_LINEAR`` when enlarging; the numpy result equals torch's to float rounding.

Used by the CAM methods (maps brought to a common size), the metrics (maps enlarged to a
mask), the synthetic datasets and the renderer (maps enlarged for display). Photos are
resized for display with PIL instead (it antialiases when shrinking, which a photo wants).

Bilinear interpolation is separable, so a map is resized as ``Wy @ map @ Wx.T`` with the
1-D interpolation matrices of :func:`bilinear_matrix`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=128)
def _matrix(n_in: int, n_out: int) -> np.ndarray:
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    m[rows, i0] += 1.0 - frac
    m[rows, i1] += frac
    m.setflags(write=False)
    return m


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in)`` float64 matrix of 1-D linear interpolation (see the module).

    Each row holds at most two non-zero weights summing to 1. The array is cached and
    read-only.

    Args:
        n_in: input length (≥ 1).
        n_out: output length (≥ 1).
    """
    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot resize between lengths {n_in} and {n_out}")
    return _matrix(n_in, n_out)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def resize_bilinear(maps: Any, size: tuple[int, int]) -> Any:
    """Resize the last two axes of ``maps`` to ``size`` = ``(H, W)`` (see the module).

    Args:
        maps: a numpy array or torch tensor ``(..., h, w)`` of floats (numpy integers are
            computed in float64).
        size: the output ``(H, W)``.

    Returns:
        The same kind of array, ``(..., H, W)``. numpy keeps a float input's dtype (float32
        stays float32, computed with float32 matrices); torch uses ``F.interpolate`` on the
        tensor's device. An input already at ``size`` is returned as it is.
    """
    H, W = int(size[0]), int(size[1])
    if tuple(maps.shape[-2:]) == (H, W):
        return maps
    if _is_torch(maps):
        import torch.nn.functional as F

        lead = tuple(maps.shape[:-2])
        flat = maps.reshape(-1, 1, *maps.shape[-2:])
        out = F.interpolate(flat, size=(H, W), mode="bilinear", align_corners=False)
        return out.reshape(*lead, H, W)
    a = np.asarray(maps)
    dtype = a.dtype if a.dtype.kind == "f" and a.dtype.itemsize >= 4 else np.dtype(np.float64)
    if a.dtype != dtype:
        a = a.astype(dtype)
    if not np.isfinite(a).all():  # a matrix product would spread NaN/inf over whole rows
        return _resize_by_gather(a, (H, W))
    wy = bilinear_matrix(a.shape[-2], H).astype(dtype, copy=False)
    wx = bilinear_matrix(a.shape[-1], W).astype(dtype, copy=False)
    return wy @ a @ wx.T


def _resize_by_gather(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The same interpolation as two gathers, so a non-finite value reaches only the output
    pixels that interpolate from it (as torch's)."""
    out = a
    for axis, new in ((-2, size[0]), (-1, size[1])):
        m = bilinear_matrix(out.shape[axis], new)
        i0 = np.argmax(m > 0, axis=1)
        i1 = np.minimum(i0 + 1, out.shape[axis] - 1)
        frac = m[np.arange(new), i1] * (i1 != i0)
        shape = [1] * out.ndim
        shape[axis] = new
        frac = frac.astype(out.dtype).reshape(shape)
        lo, hi = np.take(out, i0, axis=axis), np.take(out, i1, axis=axis)
        with np.errstate(invalid="ignore"):
            out = np.where(frac == 0, lo, lo * (1 - frac) + hi * frac)
    return out


def resize_photo(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 ``(H, W, 3)`` (or grey ``(H, W)``) photo resized to ``size`` = ``(H, W)`` with PIL's bilinear filter
    (it antialiases when shrinking, which a photo wants), one channel at a time.

    The result equals resizing the RGB image at once, bit for bit (PIL filters each band
    with the same coefficients), but the largest copy is one channel (1 byte a pixel): PIL
    keeps an RGB image at 4 bytes a pixel, 256 MB more for a 64-megapixel photo.
    """
    from PIL import Image

    if image.ndim == 3 and image.shape[2] == 4:  # PIL weighs RGBA's colours by alpha: not per band
        return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    if image.ndim == 2:
        image = image[..., None]
    out = np.empty((size[0], size[1], image.shape[2]), np.uint8)
    for c in range(image.shape[2]):
        band = Image.fromarray(np.ascontiguousarray(image[..., c]))  # shares the copy's memory
        out[..., c] = np.asarray(band.resize((size[1], size[0]), Image.Resampling.BILINEAR))
        del band  # before the next channel's copy: one at a time
    return out
