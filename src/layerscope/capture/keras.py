"""Keras 3 capture: one forward and one backward pass for every chosen layer, on the torch,
TensorFlow or JAX backend.

How the pass is kept correct and cheap:

* Each chosen layer gets a *tap* for the length of the run: an instance attribute ``call``
  that runs the layer's own ``call``, keeps its output (the layer's activation, after the
  layer's own activation function, as Keras defines it) and hands it on unchanged. Taps
  reach every layer the forward pass calls: functional, ``Sequential`` and subclassed models,
  and the layers of a nested base model (the VGG16 base inside the recipe's model). They
  are removed in ``finally``; nothing else about the model changes. (A multi-output
  ``keras.Model`` over the chosen outputs cannot reach into a nested base model without
  calling its layers on new inputs, which would add graph nodes to the caller's layers.)
* The score is the model's output at the target index (a probability for a softmax model).
  Gradients are taken with respect to the captured activations only, never the weights:

  - torch backend: ``torch.autograd.grad(score, deepest activations)`` with a tensor hook
    on each activation, so each map is computed the moment its gradient is known and the
    backward pass stops at the earliest chosen layer;
  - TensorFlow: a ``GradientTape`` that watches only the captured activations (not the
    variables, not the input), so nothing below the earliest chosen layer is recorded;
  - JAX: each tap adds a zero probe to its activation; ``jax.value_and_grad`` with respect
    to the probes gives ``∂y/∂A`` (the probes' shapes come from ``jax.eval_shape``, which
    traces the model without computing it).

* Methods get channels-first ``(N, C, h, w)`` arrays: torch tensors on the torch backend,
  :class:`DeviceArray` views of the backend's tensors on TensorFlow and JAX (the maps are
  computed on the device; all of them go to the host in one copy at the end). Shapes are
  reported in the layer's own layout (``(h, w, C)`` for channels-last) with the real sizes.
* torch is imported only on the torch backend; this module is imported only when a Keras
  model is explained.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from layerscope.capture import CaptureRequest, CaptureResult, LayerShape, given_targets, match_layers
from layerscope.errors import ModelError, UsageError
from layerscope.info import ModelInfo

_MISSING = object()


def _keras() -> Any:
    import keras

    return keras


def _children(layer: Any) -> list[Any]:
    """The direct sub-layers of a model or layer, in forward order where Keras knows it."""
    keras = _keras()
    if isinstance(layer, keras.Model):
        try:
            kids = list(layer.layers)
        except (AttributeError, ValueError):
            kids = []
    else:
        kids = list(getattr(layer, "_layers", None) or [])
    return [k for k in kids if isinstance(k, keras.layers.Layer) and not isinstance(k, keras.layers.InputLayer)]


def walk(model: Any) -> list[tuple[str, Any]]:
    """Every layer of ``model``, nested models' layers included: ``(path, layer)`` pairs.

    ``path`` joins the layer names with ``/`` (``vgg16/block1_conv1``); a layer used twice
    appears once.
    """
    out: list[tuple[str, Any]] = []
    seen = {id(model)}

    def visit(layer: Any, prefix: str) -> None:
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            out.append((path, child))
            visit(child, path)

    visit(model, "")
    return out


def is_conv(layer: Any) -> bool:
    """A 2-D convolution: ``Conv2D``, ``DepthwiseConv2D`` or ``SeparableConv2D``."""
    kl = _keras().layers
    return isinstance(layer, (kl.Conv2D, kl.DepthwiseConv2D, kl.SeparableConv2D))


def _display(model: Any) -> dict[str, str]:
    """``{path: display name}``: a layer's own Keras name when that name is unique in the
    model, else its full path."""
    walked = walk(model)
    counts = Counter(layer.name for _, layer in walked)
    return {path: (layer.name if counts[layer.name] == 1 else path) for path, layer in walked}


def layer_names(model: Any, info: ModelInfo | None = None) -> dict[str, str]:
    """Every addressable layer, name → layer path (the same type as the torch adapter's):
    the info's friendly names first, then each layer's display name, then its full path."""
    display = _display(model)
    names: dict[str, str] = dict(info.layers) if info is not None else {}
    for path, name in display.items():
        names.setdefault(name, path)
    for path in display:
        names.setdefault(path, path)
    return names


def default_layers(model: Any, info: ModelInfo | None = None) -> list[str]:
    """The default layers: the info's friendly names, else every 2-D convolution (nested
    models' included), by display name."""
    if info is not None and info.layers:
        return list(info.layers)
    display = _display(model)
    return [display[path] for path, layer in walk(model) if is_conv(layer)]


def resolve_layers(model: Any, layers: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
    """``(display name, layer path)`` pairs; see :func:`layerscope.capture.match_layers`."""
    names = layer_names(model, info)
    default = default_layers(model, info)
    if layers is None and not default:
        raise ModelError(f"Keras model {model.name!r} has no Conv2D layer; name the layers to explain")
    out, seen = [], set()
    for name, path in match_layers(layers, names, default):
        if path not in seen:  # a glob can match a layer by its name and by its path
            seen.add(path)
            out.append((name, path))
    return out


class _Taps:
    """Temporary ``call`` wrappers on the chosen layers that keep each layer's output."""

    def __init__(self, chosen: Sequence[tuple[str, Any]], strict: bool = True) -> None:
        self.chosen = list(chosen)
        self.strict = strict
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.acts: dict[str, Any] = {}
        self.order: list[str] = []
        self.bad: dict[str, Any] = {}
        self.on_act: Callable[[Any], Any] | None = None
        self.probes: dict[str, Any] | None = None
        self._saved: list[tuple[Any, Any]] = []
        self._warned: set[str] = set()

    def reset(self) -> None:
        self.acts, self.order, self.bad = {}, [], {}

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if not self.strict:  # a listing: any output's shape
                if name not in self.shapes and getattr(out, "shape", None) is not None:
                    self.shapes[name] = tuple(int(d) for d in out.shape[1:])
                    self.order.append(name)
                return out
            if name in self.acts or name in self.bad:
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(
                        f"layer {name!r} runs more than once per forward pass; its first call is used",
                        stacklevel=2,
                    )
                return out
            shape = getattr(out, "shape", None)
            if shape is None or len(shape) != 4:  # raised after the pass: Keras rewrites errors raised in call
                self.bad[name] = tuple(shape) if shape is not None else type(out).__name__
                return out
            self.acts[name] = out
            self.order.append(name)
            if self.on_act is not None:
                self.on_act(out)
            if self.probes is not None:
                out = out + self.probes[name]
            return out

        return call

    def __enter__(self) -> _Taps:
        try:
            for name, layer in self.chosen:
                self._saved.append((layer, layer.__dict__.get("call", _MISSING)))
                layer.__dict__["call"] = self._wrap(name, layer.call)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer, prev in reversed(self._saved):
            if prev is _MISSING:
                layer.__dict__.pop("call", None)
            else:
                layer.__dict__["call"] = prev
        self._saved.clear()

    def check(self, wanted: Sequence[str]) -> None:
        """Raise for a chosen layer that did not run or does not output a feature map."""
        for name, shape in self.bad.items():
            tokens = isinstance(shape, tuple) and len(shape) == 3
            raise UsageError(
                f"layer {name!r} outputs {shape}, not a (N, h, w, C) feature map"
                + (
                    "; a Keras model's token layers (N, T, C) are not laid out as maps (PyTorch models' are): "
                    "choose a convolutional layer, or explain the PyTorch twin of the model"
                    if tokens
                    else ""
                )
            )
        missing = [n for n in wanted if n not in self.acts]
        if missing:
            raise ModelError(
                f"layer(s) {', '.join(repr(n) for n in missing)} did not run in the forward pass: a model "
                "that computes them without calling the layer (keras.ops on its weights) cannot be explained there"
            )


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


class _Maps:
    """Turns each layer's ``(A, G)`` into its map as soon as both are known; the maps stay
    where they were computed (torch tensors on the device) until :meth:`finish`."""

    def __init__(self, layer_fn: Callable[[Any, Any], Any], channels_last: dict[str, bool]) -> None:
        self.layer_fn = layer_fn
        self.channels_last = channels_last
        self.maps: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def keep(self, name: str, act: Any, grad: Any) -> None:
        self.shapes[name] = tuple(int(s) for s in act.shape[1:])
        if self.channels_last[name]:
            act = _nchw(act)
            grad = None if grad is None else _nchw(grad)
        self.maps[name] = self.layer_fn(_fp32(act), _fp32(grad))

    def finish(self, order: list[str], outputs: Any, targets: Any) -> CaptureResult:
        """One transfer of every map (and the outputs, targets) to the host; NaN/inf in a map
        is set to 0 and reported, in the outputs it is an error."""
        maps = {n: self.maps.pop(n) for n in order}
        if any(hasattr(m, "detach") for m in maps.values()) or hasattr(outputs, "detach"):
            from layerscope.capture._autograd import maps_to_host

            cams, nonfinite, outputs, targets = maps_to_host(maps, outputs, targets)
        elif any(isinstance(m, DeviceArray) for m in maps.values()):
            cams, nonfinite, outputs, targets = _device_maps_to_host(maps, outputs, targets)
        else:
            cams, nonfinite = {}, []
            for n, m in maps.items():
                cam = np.asarray(m, dtype=np.float32)
                if not np.isfinite(cam).all():
                    nonfinite.append(n)
                    cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
                cams[n] = cam
            outputs = np.asarray(outputs, dtype=np.float32)
            targets = np.asarray(targets, dtype=np.int64)
        _check_outputs_finite(outputs)
        return CaptureResult(
            layers=order, shapes=self.shapes, cams=cams, outputs=outputs, targets=targets, nonfinite=nonfinite
        )


def _device_maps_to_host(
    maps: dict[str, Any], outputs: Any, targets: Any
) -> tuple[dict[str, np.ndarray], list[str], np.ndarray, np.ndarray]:
    """TensorFlow/JAX: every map, its finiteness flag, the outputs and the targets in one
    buffer on the device, one copy to the host."""
    xp = next(m.xp for m in maps.values() if isinstance(m, DeviceArray))
    parts = {n: (m.t if isinstance(m, DeviceArray) else xp.asarray(np.asarray(m))) for n, m in maps.items()}
    parts = {n: xp.asarray(p, dtype="float32") for n, p in parts.items()}
    flags = [xp.asarray(xp.all(xp.isfinite(p)), dtype="float32") for p in parts.values()]
    pieces = [xp.reshape(xp.where(xp.isfinite(p), p, xp.zeros_like(p)), (-1,)) for p in parts.values()]
    pieces += [xp.stack(flags)] if flags else []
    pieces += [xp.reshape(xp.asarray(_raw_of(outputs), dtype="float32"), (-1,))]
    pieces += [xp.reshape(xp.asarray(_raw_of(targets), dtype="float32"), (-1,))]
    flat = np.asarray(xp.concatenate(pieces, axis=0))
    cams: dict[str, np.ndarray] = {}
    at = 0
    for n, p in parts.items():
        size = int(np.prod(p.shape))
        cams[n] = flat[at : at + size].reshape(tuple(int(s) for s in p.shape)).copy()
        at += size
    ok = flat[at : at + len(parts)]
    at += len(parts)
    nonfinite = [n for n, good in zip(parts, ok, strict=True) if not good]
    shape = tuple(int(s) for s in _raw_of(outputs).shape)
    k = int(np.prod(shape))
    out = flat[at : at + k].reshape(shape).copy()
    return cams, nonfinite, out, flat[at + k :].astype(np.int64)


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


def _check_outputs_finite(outputs: np.ndarray) -> None:
    bad = ~np.isfinite(outputs).all(axis=tuple(range(1, outputs.ndim)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(
            f"the model's output is NaN or inf for image {i} ({int(bad.sum())} of {len(bad)} images): "
            "check the weights and the input (a model that outputs NaN cannot be explained)"
        )


def _nchw(t: Any) -> Any:
    if hasattr(t, "permute"):
        return t.permute(0, 3, 1, 2)
    return t.transpose(0, 3, 1, 2) if isinstance(t, DeviceArray) else np.transpose(t, (0, 3, 1, 2))


def _channels_last(layer: Any) -> bool:
    fmt = getattr(layer, "data_format", None) or _keras().config.image_data_format()
    return fmt == "channels_last"


def _input_spec(model: Any) -> tuple[Any, ...] | None:
    """The model's per-image input shape, ``(H, W, C)`` with ``None`` for free sizes, if known."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    return tuple(inputs[0].shape[1:])


def model_input(model: Any, x: Any, backend: str) -> Any:
    """The batch in the model's layout: a channels-first ``(N, C, H, W)`` array (what
    :class:`~layerscope.inputs.Preprocess` makes) is transposed for a channels-last model."""
    keras = _keras()
    if hasattr(x, "detach") and backend != "torch":
        x = x.detach().cpu().numpy()
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype=np.float32)
    if len(x.shape) == 3:
        x = x[None]
    if len(x.shape) != 4:
        raise UsageError(f"a Keras image batch must be 4-D (N, H, W, C), not {tuple(x.shape)}")
    shape = tuple(int(s) for s in x.shape)
    last = keras.config.image_data_format() == "channels_last"
    c_axis, other = (3, 1) if last else (1, 3)
    spec = _input_spec(model)
    want_c = spec[-1 if last else 0] if spec else None
    if want_c is not None:
        swap = shape[c_axis] != want_c and shape[other] == want_c
    else:
        swap = shape[c_axis] not in (1, 3, 4) and shape[other] in (1, 3, 4)
    if swap:
        perm = (0, 2, 3, 1) if last else (0, 3, 1, 2)
        x = np.transpose(x, perm) if isinstance(x, np.ndarray) else keras.ops.transpose(x, perm)
        shape = tuple(int(s) for s in x.shape)
    if spec:
        want_hw = spec[:2] if last else spec[1:]
        got_hw = shape[1:3] if last else shape[2:]
        if all(w is not None for w in want_hw) and tuple(want_hw) != tuple(got_hw):
            h, w = want_hw
            raise UsageError(
                f"the model takes {h}×{w} images, not {got_hw[0]}×{got_hw[1]}: pass "
                f"preprocess=layerscope.inputs.Preprocess(size=({h}, {w})) or resize the input"
            )
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32)
    return x


def _output(out: Any) -> Any:
    if isinstance(out, dict):
        if len(out) != 1:
            raise ModelError(f"the model returns {len(out)} named outputs; expected one (N, classes) output")
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        if not out:
            raise ModelError("the model returns no output")
        out = out[0]
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2:
        raise ModelError(
            f"the model's output has shape {tuple(shape) if shape is not None else type(out).__name__}; "
            "expected (N, classes)"
        )
    return out


def _targets(outputs: np.ndarray, target: int | Sequence[int] | None) -> np.ndarray:
    n, k = outputs.shape
    t = given_targets(target, n, k)
    return outputs.argmax(axis=1).astype(np.int64) if t is None else t


def _check_classes(out: Any) -> tuple[int, int]:
    n, k = (int(s) for s in out.shape)
    if k == 0:
        raise ModelError("the model's output has 0 classes (shape (N, 0)); there is no class to explain")
    return n, k


@contextlib.contextmanager
def _precision(precision: str, backend: str) -> Iterator[None]:
    """``"highest"`` turns TF32 off for the pass on the backend (restored afterwards);
    ``"fast"`` is for PyTorch models (a Keras model's precision is its dtype policy)."""
    if precision == "fast":
        raise UsageError(
            "precision='fast' is for PyTorch models; for a Keras model use a mixed-precision dtype policy "
            "(keras.mixed_precision.set_global_policy('mixed_float16') before building it)"
        )
    if precision != "highest":
        yield
        return
    if backend == "torch":
        import torch

        from layerscope.capture._autograd import precision_mode

        with precision_mode("highest", torch.device("cpu")):
            yield
    elif backend == "tensorflow":
        import tensorflow as tf

        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)
    else:
        import jax

        with jax.default_matmul_precision("highest"):
            yield


def run(
    model: Any,
    x: Any,
    layers: Sequence[tuple[str, str]],
    target: int | Sequence[int] | None,
    layer_fn: Callable[[Any, Any], Any],
    need_gradients: bool = True,
    precision: str = "default",
) -> CaptureResult:
    """Capture the chosen layers of a Keras 3 model in one forward (and one backward) pass.

    Args:
        model: any ``keras.Model`` returning ``(N, classes)`` scores.
        x: the batch: ``(N, H, W, C)`` in the model's layout, or channels-first
            ``(N, C, H, W)`` numpy (as :class:`~layerscope.inputs.Preprocess` makes), which
            is transposed; never modified.
        layers: ``(display name, layer path)`` pairs from :func:`resolve_layers`.
        target: ``None`` (top-1 per image), one class index, or one per image.
        layer_fn: ``(A, G) -> (N, h, w)`` map on channels-first arrays, called once per layer.
        need_gradients: run the backward pass (``False`` for gradient-free methods).
        precision: ``"default"`` or ``"highest"`` (TF32 off for the pass).

    Returns:
        A :class:`~layerscope.capture.CaptureResult`; shapes in the layers' own layout.
    """
    keras = _keras()
    backend = keras.backend.backend()
    by_path = dict(walk(model))
    try:
        chosen = [(name, by_path[path]) for name, path in layers]
    except KeyError as e:
        raise UsageError(f"no layer {e.args[0]!r} in the model") from None
    maps = _Maps(layer_fn, {name: _channels_last(layer) for name, layer in chosen})
    x = model_input(model, x, backend)
    runners = {"torch": _run_torch, "tensorflow": _run_tensorflow, "jax": _run_jax}
    if backend not in runners:
        raise ModelError(f"the Keras backend {backend!r} is not supported; use torch, tensorflow or jax")
    with _precision(precision, backend):
        order, outputs, targets = runners[backend](model, x, chosen, target, maps, need_gradients)
    return maps.finish(order, outputs, targets)


def _run_torch(
    model: Any, x: Any, chosen: list[tuple[str, Any]], target: Any, maps: _Maps, need_gradients: bool
) -> tuple[list[str], Any, Any]:
    """Maps on the device, one transfer at the end (:func:`_Maps.finish`)."""
    import keras
    import torch

    from layerscope.capture._autograd import backward_to_maps

    xin = x if isinstance(x, torch.Tensor) else keras.ops.convert_to_tensor(x)
    xin = xin.detach().clone().requires_grad_(need_gradients)
    with _Taps(chosen) as taps, torch.set_grad_enabled(need_gradients):
        out = _output(model(xin, training=False))
    acts = taps.acts
    try:
        taps.check([n for n, _ in chosen])
        n, k = _check_classes(out)
        given = given_targets(target, n, k)
        targets = (
            out.detach().argmax(dim=1) if given is None else torch.as_tensor(given, dtype=torch.long, device=out.device)
        )
        order = list(taps.order)
        if need_gradients:
            backward_to_maps(out, targets, acts, maps.keep)
        else:
            with torch.no_grad():
                for name in order:
                    maps.keep(name, acts.pop(name), None)
        return order, out.detach(), targets
    finally:
        acts.clear()


def _run_tensorflow(
    model: Any, x: Any, chosen: list[tuple[str, Any]], target: Any, maps: _Maps, need_gradients: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    import tensorflow as tf

    tnp = tf.experimental.numpy  # the maps are computed where the tensors are (no per-layer copy)
    xin = tf.convert_to_tensor(x)
    with _Taps(chosen) as taps:
        if not need_gradients:
            out = _output(model(xin, training=False))
        else:
            # Only the activations are watched: the variables and the input are not, so the
            # tape records nothing below the earliest chosen layer and no weight gradient.
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                taps.on_act = tape.watch
                out = _output(model(xin, training=False))
                n, k = _check_classes(out)
                given = given_targets(target, n, k)
                targets = tf.argmax(out, axis=1) if given is None else tf.constant(given)
                score = tf.reduce_sum(tf.cast(tf.gather(out, targets, axis=1, batch_dims=1), tf.float32))
    taps.check([n for n, _ in chosen])
    order = list(taps.order)
    acts = taps.acts
    if not need_gradients:
        outputs = np.asarray(out, dtype=np.float32)
        _check_classes(outputs)
        targets = _targets(outputs, target)
        for name in order:
            maps.keep(name, DeviceArray(acts.pop(name), tnp), None)
        return order, outputs, targets
    grads = tape.gradient(score, [acts[n] for n in order], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    for i, name in enumerate(order):
        maps.keep(name, DeviceArray(acts.pop(name), tnp), DeviceArray(grads[i], tnp))
        grads[i] = None
    return order, np.asarray(out, dtype=np.float32), np.asarray(targets, dtype=np.int64)


def _run_jax(
    model: Any, x: Any, chosen: list[tuple[str, Any]], target: Any, maps: _Maps, need_gradients: bool
) -> tuple[list[str], Any, Any]:
    import jax
    import jax.numpy as jnp

    xin = jnp.asarray(x)
    wanted = [n for n, _ in chosen]
    with _Taps(chosen) as taps:
        if not need_gradients:
            out = _output(model(xin, training=False))
            taps.check(wanted)
            n, k = _check_classes(out)
            given = given_targets(target, n, k)
            targets = jnp.argmax(out, axis=1) if given is None else jnp.asarray(given)
            order = list(taps.order)
            for name in order:  # the maps are computed on the device (jax.numpy), no per-layer copy
                maps.keep(name, DeviceArray(taps.acts.pop(name), jnp), None)
            return order, out, targets

        def forward(probes: dict[str, Any] | None) -> Any:
            taps.reset()
            taps.probes = probes
            return _output(model(xin, training=False))

        spec = jax.eval_shape(lambda: forward(None))  # traces only: no computation
        taps.check(wanted)
        probes = {n: jnp.zeros(taps.acts[n].shape, taps.acts[n].dtype) for n in taps.order}
        n, k = _check_classes(spec)
        given = given_targets(target, n, k)

        def score_fn(p: dict[str, Any]) -> tuple[Any, tuple[dict[str, Any], Any, Any]]:
            out = forward(p)
            t = jnp.asarray(given) if given is not None else jnp.argmax(out, axis=1)
            score = jnp.sum(jnp.take_along_axis(out, t[:, None], axis=1).astype(jnp.float32))
            return score, (dict(taps.acts), out, t)

        (_, (acts, out, t)), grads = jax.value_and_grad(score_fn, has_aux=True)(probes)
        order = list(taps.order)
        taps.reset()
    for name in order:  # on the device; every map, the outputs and the targets go to the host in one copy
        maps.keep(name, DeviceArray(acts.pop(name), jnp), DeviceArray(grads.pop(name), jnp))
    return order, out, t


class KerasAdapter:
    """The :class:`~layerscope.capture.Adapter` for Keras 3 models (any backend)."""

    name = "keras"

    def resolve_layers(self, model: Any, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
        """``(display name, layer path)`` pairs for ``spec`` (``None``: the default layers)."""
        return resolve_layers(model, spec, info)

    def layer_shapes(
        self, model: Any, size: tuple[int, int], info: ModelInfo | None = None, every_module: bool = False
    ) -> list[LayerShape]:
        """Each default layer (every leaf layer with ``every_module``) and its real per-image
        output shape, in the layer's own layout, in forward order, from one forward pass of a
        zero image. A model with a fixed input size uses its own size, not ``size``."""
        keras = _keras()
        if every_module:
            display = _display(model)
            friendly = {p: n for n, p in (info.layers if info is not None else {}).items()}
            chosen = [(friendly.get(p, display[p]), p) for p, layer in walk(model) if not _children(layer)]
        else:
            chosen = resolve_layers(model, None, info)
        by_path = dict(walk(model))
        paths = dict(chosen)
        last = keras.config.image_data_format() == "channels_last"
        spec = _input_spec(model)
        h, w = (int(s) for s in size)
        c = 3
        if spec:
            sh, sw, sc = (spec[0], spec[1], spec[2]) if last else (spec[1], spec[2], spec[0])
            h, w = sh or h, sw or w
            c = sc or c
        x = np.zeros((1, h, w, c) if last else (1, c, h, w), dtype=np.float32)
        with _Taps([(n, by_path[p]) for n, p in chosen], strict=False) as taps:
            model(x, training=False)
        return [LayerShape(n, paths[n], taps.shapes[n]) for n in taps.order]

    def run(
        self, model: Any, x: Any, layers: Sequence[tuple[str, str]], targets: Any, request: CaptureRequest
    ) -> CaptureResult:
        """What ``request`` asks for: ``"gradients"`` or ``"activations"`` (the perturbation
        and saliency methods are for PyTorch models)."""
        if request.needs not in ("gradients", "activations"):
            raise UsageError(f"{request.label or 'this method'} is available for PyTorch models only")
        if callable(targets):
            raise UsageError("a callable target is for PyTorch models; give Keras models a class index or name")
        if request.device not in (None, "auto"):
            raise UsageError(
                f"device={request.device!r} is for PyTorch models; a Keras model runs where Keras placed it "
                "(use keras.device(...) or CUDA_VISIBLE_DEVICES)"
            )
        return run(
            model,
            x,
            layers,
            targets,
            request.fn,
            need_gradients=request.needs == "gradients",
            precision=request.precision,
        )
