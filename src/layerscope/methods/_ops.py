"""The few array operations whose spelling differs between torch and numpy.

CAM methods are written with operations torch tensors and numpy arrays share (``*``, ``/``,
``**``, ``.sum(axis=...)``, ``.mean(axis=...)``, ``.clip(min=0)``, ``.reshape``, ``@``,
comparisons, indexing). What cannot be written that way lives here, one small function
each, branching on the array type; torch is imported only when a torch tensor comes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.split(".")[0] == "torch"


def amax(x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any:
    """Maximum over ``axis`` (torch's ``.max`` takes one dim and returns indices too)."""
    return x.amax(dim=axis, keepdim=keepdims) if is_torch(x) else x.max(axis=axis, keepdims=keepdims)


def amin(x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any:
    """Minimum over ``axis``."""
    return x.amin(dim=axis, keepdim=keepdims) if is_torch(x) else x.min(axis=axis, keepdims=keepdims)


def zeros(like: Any, shape: Sequence[int]) -> Any:
    """Zeros of ``shape`` with ``like``'s dtype and device."""
    return like.new_zeros(tuple(shape)) if is_torch(like) else np.zeros(tuple(shape), dtype=like.dtype)


def index(like: Any, values: np.ndarray) -> Any:
    """An integer index array usable on ``like`` (on its device for a tensor)."""
    if is_torch(like):
        import torch

        return torch.as_tensor(values, dtype=torch.long, device=like.device)
    return np.asarray(values, dtype=np.int64)


def to_numpy(x: Any) -> np.ndarray:
    """A host numpy copy of a tensor or array."""
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


def softmax(x: Any, axis: int = -1) -> Any:
    """Softmax along ``axis``, computed stably."""
    z = x - amax(x, axis, keepdims=True)
    e = z.exp() if is_torch(z) else np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def safe_divide(num: Any, den: Any) -> Any:
    """``num / den`` where ``den != 0``, else 0 (never inf or NaN from a zero denominator)."""
    nonzero = den != 0
    return num / (den + (den == 0)) * nonzero


def minmax_per_map(x: Any) -> Any:
    """Scale each ``(h, w)`` map of ``(..., h, w)`` to [0, 1]; a flat map becomes zeros."""
    lo = amin(x, (-2, -1), keepdims=True)
    hi = amax(x, (-2, -1), keepdims=True)
    return safe_divide(x - lo, hi - lo)


def upsample(maps: Any, size: tuple[int, int]) -> Any:
    """Bilinear resize of ``(M, h, w)`` maps to ``(M, H, W)``, half-pixel centres
    (``align_corners=False``, as ``torch.nn.functional.interpolate``), edges clamped."""
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    if is_torch(maps):
        import torch.nn.functional as F

        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    out = maps
    for axis, new in ((1, size[0]), (2, size[1])):
        old = out.shape[axis]
        pos = (np.arange(new, dtype=np.float64) + 0.5) * (old / new) - 0.5
        pos = np.clip(pos, 0.0, old - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, old - 1)
        frac = (pos - lo).astype(out.dtype)
        shape = [1, 1, 1]
        shape[axis] = new
        frac = frac.reshape(shape)
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def top_eigenvector(m: Any) -> Any:
    """For ``m`` ``(N, P, C)``: each item's unit vector ``v`` (``(N, C)``) maximising
    ``‖m v‖`` — the first right singular vector, from the ``C × C`` Gram matrix in float64."""
    if is_torch(m):
        import torch

        md = m.double()
        _, vecs = torch.linalg.eigh(md.swapaxes(1, 2) @ md)
        return vecs[..., -1].to(m.dtype)
    md = m.astype(np.float64)
    _, vecs = np.linalg.eigh(md.swapaxes(1, 2) @ md)
    return vecs[..., -1].astype(m.dtype)


def sign(x: Any) -> Any:
    """+1 where ``x >= 0``, −1 elsewhere (never 0, so a sign flip never zeroes a map)."""
    return (x >= 0) * 2.0 - 1.0
