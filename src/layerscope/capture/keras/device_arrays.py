"""TensorFlow / JAX tensors seen through numpy-style methods (:class:`DeviceArray`), so the
CAM methods compute where the tensors live, and the pieces of the one transfer."""

from __future__ import annotations

from typing import Any

import numpy as np


class DeviceArray:
    """A TensorFlow or JAX tensor seen through the numpy-style methods the CAM methods use
    (``.mean(axis=)``, ``.sum(axis=, keepdims=)``, ``.clip(min=)``, ``.reshape``, ``@``,
    arithmetic, comparisons, indexing), computed by ``xp`` (``tf.experimental.numpy`` or
    ``jax.numpy``) where the tensor lives: the activations and gradients never go to the host,
    only the maps, together, at the end. Anything else (``np.linalg`` for the Eigen methods)
    gets a host copy through ``__array__``.
    """

    __array_priority__ = 1000  # numpy defers to our operators: ndarray * DeviceArray stays here

    def __init__(self, t: Any, xp: Any) -> None:
        self.t, self.xp = t, xp

    def _wrap(self, t: Any) -> DeviceArray:
        return DeviceArray(t, self.xp)

    def _raw(self, other: Any) -> Any:
        return other.t if isinstance(other, DeviceArray) else other

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.t.shape)

    @property
    def dtype(self) -> Any:
        return np.dtype(str(self.t.dtype).replace("<dtype: '", "").replace("'>", ""))

    @property
    def ndim(self) -> int:
        return len(self.t.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array(self.t, dtype=dtype)  # a writable host copy

    def astype(self, dtype: Any) -> DeviceArray:
        return self._wrap(self.xp.asarray(self.t, dtype=np.dtype(dtype).name))

    def mean(self, axis: Any = None, keepdims: bool = False) -> DeviceArray:
        return self._wrap(self.xp.mean(self.t, axis=axis, keepdims=keepdims))

    def sum(self, axis: Any = None, keepdims: bool = False) -> DeviceArray:
        return self._wrap(self.xp.sum(self.t, axis=axis, keepdims=keepdims))

    def max(self, axis: Any = None, keepdims: bool = False) -> DeviceArray:
        return self._wrap(self.xp.max(self.t, axis=axis, keepdims=keepdims))

    def min(self, axis: Any = None, keepdims: bool = False) -> DeviceArray:
        return self._wrap(self.xp.min(self.t, axis=axis, keepdims=keepdims))

    def clip(self, min: Any = None, max: Any = None) -> DeviceArray:  # numpy's names
        t = self.t
        if min is not None:
            t = self.xp.maximum(t, self.xp.asarray(min, dtype=t.dtype))
        if max is not None:
            t = self.xp.minimum(t, self.xp.asarray(max, dtype=t.dtype))
        return self._wrap(t)

    def reshape(self, *shape: Any) -> DeviceArray:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._wrap(self.xp.reshape(self.t, tuple(int(s) for s in shape)))

    def swapaxes(self, a: int, b: int) -> DeviceArray:
        return self._wrap(self.xp.swapaxes(self.t, a, b))

    def transpose(self, *axes: Any) -> DeviceArray:
        return self._wrap(self.xp.transpose(self.t, axes or None))

    def __getitem__(self, key: Any) -> DeviceArray:
        return self._wrap(self.t[key])

    def _binary(name: str, reverse: bool = False) -> Any:  # type: ignore[misc]
        def op(self: DeviceArray, other: Any) -> DeviceArray:
            a, b = self.t, self._raw(other)
            if isinstance(b, np.ndarray) or np.isscalar(b) or isinstance(b, bool):
                b = self.xp.asarray(b)
            if reverse:
                a, b = b, a
            xp = self.xp
            a, b = _promote(xp, a, b)
            return self._wrap(getattr(xp, name)(a, b))

        return op

    __add__, __radd__ = _binary("add"), _binary("add", True)
    __sub__, __rsub__ = _binary("subtract"), _binary("subtract", True)
    __mul__, __rmul__ = _binary("multiply"), _binary("multiply", True)
    __truediv__, __rtruediv__ = _binary("true_divide"), _binary("true_divide", True)
    __pow__ = _binary("power")
    __matmul__, __rmatmul__ = _binary("matmul"), _binary("matmul", True)
    __gt__, __ge__ = _binary("greater"), _binary("greater_equal")
    __lt__, __le__ = _binary("less"), _binary("less_equal")
    __eq__, __ne__ = _binary("equal"), _binary("not_equal")  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]

    def __neg__(self) -> DeviceArray:
        return self._wrap(self.xp.negative(self.t))

    def __abs__(self) -> DeviceArray:
        return self._wrap(self.xp.abs(self.t))

    def __invert__(self) -> DeviceArray:
        return self._wrap(self.xp.logical_not(self.t))


def _promote(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """numpy's promotion for the few mixes the methods use: bool with float, float32 with a
    Python/float64 scalar (kept float32, as torch does)."""
    da, db = str(a.dtype), str(b.dtype)
    if da == db:
        return a, b
    fa, fb = "float" in da, "float" in db
    if fa and not fb:
        return a, xp.asarray(b, dtype=_np_name(da))
    if fb and not fa:
        return xp.asarray(a, dtype=_np_name(db)), b
    if fa and fb:  # the wider float wins unless one side is a 0-d constant
        if len(b.shape) == 0:
            return a, xp.asarray(b, dtype=_np_name(da))
        if len(a.shape) == 0:
            return xp.asarray(a, dtype=_np_name(db)), b
        wide = _np_name(da) if "64" in da else _np_name(db)
        return xp.asarray(a, dtype=wide), xp.asarray(b, dtype=wide)
    return xp.asarray(a, dtype="int64"), xp.asarray(b, dtype="int64")


def _np_name(dtype: str) -> str:
    return dtype.replace("<dtype: '", "").replace("'>", "")


def _raw_of(t: Any) -> Any:
    return t.t if isinstance(t, DeviceArray) else t


def _fp32(t: Any) -> Any:
    """A lower-precision float array in float32 (the CAM math runs in float32)."""
    if t is None:
        return None
    dtype = str(getattr(t, "dtype", ""))
    if dtype.endswith(("float16", "bfloat16")):
        if isinstance(t, DeviceArray):
            return t.astype(np.float32)
        return t.float() if hasattr(t, "float") else np.asarray(t, dtype=np.float32)
    return t


def _nchw(t: Any) -> Any:
    if hasattr(t, "permute"):
        return t.permute(0, 3, 1, 2)
    return t.transpose(0, 3, 1, 2) if isinstance(t, DeviceArray) else np.transpose(t, (0, 3, 1, 2))


class TokenLayout:
    """A Keras token layer's ``(N, T, C)`` output laid out as ``(N, C, h, w)``: the ``extra``
    leading tokens (class, distillation, registers) dropped, the rest a ``grid`` (the torch
    adapter's token rule, :func:`layerscope.capture._layers.token_grids`). Applied alike to
    the activation and its gradient, on the backend's tensors."""

    identity = False

    def __init__(self, extra: int, grid: tuple[int, int], tokens: int) -> None:
        self.extra, self.grid = extra, grid
        self.note = f"tokens {tokens} → {grid[0]}×{grid[1]}"

    def __call__(self, t: Any) -> Any:
        n, _, c = (int(s) for s in t.shape)
        h, w = self.grid
        grid = t[:, self.extra :, :]
        if hasattr(grid, "permute"):  # torch
            return grid.reshape(n, h, w, c).permute(0, 3, 1, 2)
        if isinstance(grid, DeviceArray):
            return grid.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return np.transpose(np.reshape(grid, (n, h, w, c)), (0, 3, 1, 2))


class XpOps:
    """:class:`~layerscope.capture._maps.ArrayOps` for TensorFlow / JAX tensors through
    their numpy namespace ``xp`` (maps may be :class:`DeviceArray` or host arrays)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def f32(self, m: Any) -> Any:
        xp = self.xp
        return xp.asarray(m.t if isinstance(m, DeviceArray) else xp.asarray(np.asarray(m)), dtype="float32")

    def all_finite(self, t: Any) -> Any:
        return self.xp.asarray(self.xp.all(self.xp.isfinite(t)), dtype="float32")

    def zeroed_flat(self, t: Any) -> Any:
        xp = self.xp
        return xp.reshape(xp.where(xp.isfinite(t), t, xp.zeros_like(t)), (-1,))

    def stack(self, flags: list[Any]) -> Any:
        return self.xp.stack(flags)

    def flat(self, t: Any) -> Any:
        return self.xp.reshape(self.xp.asarray(_raw_of(t), dtype="float32"), (-1,))

    def cat(self, pieces: list[Any]) -> Any:
        return self.xp.concatenate(pieces, axis=0)

    def to_numpy(self, buf: Any) -> np.ndarray:
        return np.asarray(buf)

    def shape(self, t: Any) -> tuple[int, ...]:
        return tuple(int(s) for s in _raw_of(t).shape)
