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


def concat(parts: Sequence[Any], axis: int = 0) -> Any:
    """``parts`` joined along ``axis`` (torch, numpy, or the Keras adapter's device arrays)."""
    first = parts[0]
    if is_torch(first):
        import torch

        return torch.cat(list(parts), dim=axis)
    xp = getattr(first, "xp", None)  # a TensorFlow / JAX tensor seen through numpy-style methods
    if xp is not None:
        return type(first)(xp.concatenate([p.t for p in parts], axis=axis), xp)
    return np.concatenate([np.asarray(p) for p in parts], axis=axis)


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


def divide_nonzero_(num: Any, den: Any) -> Any:
    """``num / den`` where ``den != 0``, else 0, like :func:`safe_divide` but written into
    ``num`` (a temporary the caller owns) where the array type allows it: two passes over the
    data instead of five."""
    if is_torch(num):
        return num.div_(den).masked_fill_(den == 0, 0)
    if isinstance(num, np.ndarray) and isinstance(den, np.ndarray):
        zero = den == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(num, den, out=num)
        num[zero] = 0
        return num
    return safe_divide(num, den)


def minmax_per_map(x: Any) -> Any:
    """Scale each ``(h, w)`` map of ``(..., h, w)`` to [0, 1]; a flat map becomes zeros."""
    lo = amin(x, (-2, -1), keepdims=True)
    hi = amax(x, (-2, -1), keepdims=True)
    return safe_divide(x - lo, hi - lo)


def upsample(maps: Any, size: tuple[int, int]) -> Any:
    """Bilinear resize of ``(M, h, w)`` maps to ``(M, H, W)`` with the package's one
    convention (:func:`layerscope.resize.resize_bilinear`: half-pixel centres, edges clamped)."""
    from layerscope.resize import resize_bilinear

    return resize_bilinear(maps, size)


def finite_items(x: Any) -> Any:
    """``(N,)`` booleans: whether every value of item ``x[i]`` is finite."""
    if is_torch(x):
        import torch

        return torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
    return np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)


def nan_to_zero(x: Any) -> Any:
    """``x`` with NaN and ±inf set to 0."""
    if is_torch(x):
        import torch

        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def nan_where(mask: Any, like: Any) -> Any:
    """NaN where ``mask`` is true, 0 elsewhere, in ``like``'s dtype (and device)."""
    if is_torch(mask):
        import torch

        return torch.where(mask, float("nan"), 0.0).to(like.dtype)
    return np.where(mask, np.nan, 0.0).astype(like.dtype)


def top_eigenvector(m: Any) -> Any:
    """For ``m`` ``(N, P, C)``: each item's unit vector ``v`` (``(N, C)``) maximising
    ``‖m v‖`` — the first right singular vector, from the ``C × C`` Gram matrix in float64.

    Each item is scaled by its largest magnitude first (the vector does not change), so very
    large finite values cannot overflow the Gram matrix; NaN/inf values count as 0 here (the
    caller marks such items), so the decomposition always converges.
    """
    md = nan_to_zero(m.double() if is_torch(m) else m.astype(np.float64))
    scale = amax(abs(md), (1, 2), keepdims=True)
    md = safe_divide(md, scale)
    if is_torch(m):
        import torch

        _, vecs = torch.linalg.eigh(md.swapaxes(1, 2) @ md)
        return vecs[..., -1].to(m.dtype)
    _, vecs = np.linalg.eigh(md.swapaxes(1, 2) @ md)
    return vecs[..., -1].astype(m.dtype)


def sign(x: Any) -> Any:
    """+1 where ``x >= 0``, −1 elsewhere (never 0, so a sign flip never zeroes a map)."""
    return (x >= 0) * 2.0 - 1.0


def eye(like: Any, n: int) -> Any:
    """The ``n × n`` identity in ``like``'s dtype (and device)."""
    if is_torch(like):
        import torch

        return torch.eye(n, dtype=like.dtype, device=like.device)
    return np.eye(n, dtype=like.dtype)


def stack(arrays: Sequence[Any], axis: int = 0) -> Any:
    """``arrays`` stacked along a new ``axis``."""
    if is_torch(arrays[0]):
        import torch

        return torch.stack(list(arrays), dim=axis)
    return np.stack(list(arrays), axis=axis)


def zero_lowest(x: Any, k: int) -> Any:
    """``x`` ``(M, P)`` with the ``k`` lowest values of each row set to 0 (ties: the first
    ones in the row, a stable sort in both frameworks)."""
    if k <= 0:
        return x
    if is_torch(x):
        import torch

        idx = torch.argsort(x, dim=1, stable=True)[:, :k]
        return x.scatter(1, idx, 0.0)
    idx = np.argsort(x, axis=1, kind="stable")[:, :k]
    out = x.copy()
    np.put_along_axis(out, idx, 0, axis=1)
    return out


def exp(x: Any) -> Any:
    """Element-wise ``e**x``."""
    return x.exp() if is_torch(x) else np.exp(x)


def tanh(x: Any) -> Any:
    """Element-wise hyperbolic tangent."""
    return x.tanh() if is_torch(x) else np.tanh(x)


def top_eigenpair(k: Any) -> tuple[Any, Any]:
    """For symmetric ``k`` ``(N, P, P)``: each item's largest eigenvalue ``(N,)`` and its unit
    eigenvector ``(N, P)``, computed in float64 (returned in ``k``'s dtype)."""
    if is_torch(k):
        import torch

        vals, vecs = torch.linalg.eigh(k.double())
        return vals[..., -1].to(k.dtype), vecs[..., -1].to(k.dtype)
    vals, vecs = np.linalg.eigh(np.asarray(k, dtype=np.float64))
    return vals[..., -1].astype(k.dtype), vecs[..., -1].astype(k.dtype)


def take_along(x: Any, idx: Any) -> Any:
    """``x[i, idx[i, j]]`` for ``x`` ``(N, K)`` and integer ``idx`` ``(N, M)``."""
    return x.gather(1, idx) if is_torch(x) else np.take_along_axis(x, idx, axis=1)


def argsort(x: Any) -> Any:
    """Indices that sort each row of ``x`` ``(N, K)`` ascending; ties keep their order."""
    return x.argsort(dim=1, stable=True) if is_torch(x) else np.argsort(x, axis=1, kind="stable")


def as_float64(x: Any) -> Any:
    """``x`` in float64: a torch tensor stays on its device; anything else becomes a host
    numpy array (TensorFlow / JAX views included)."""
    return x.double() if is_torch(x) else np.asarray(x, dtype=np.float64)
