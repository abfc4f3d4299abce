"""Keras' backends: importing Keras (saying which backend is missing), the precision of a
pass, and the capture run on the torch, TensorFlow and JAX backends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from layerscope.capture._maps import Maps, NumpyOps
from layerscope.capture._request import CaptureResult
from layerscope.capture._targets import given_targets
from layerscope.capture.keras._module import keras_module as _keras
from layerscope.capture.keras.device_arrays import DeviceArray, XpOps, _fp32, _nchw
from layerscope.capture.keras.model_io import _channels_last, _check_classes, _output, _targets, model_input
from layerscope.capture.keras.taps import _Taps, patch_size, walk
from layerscope.errors import ModelError, UsageError


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
    layouts = {name: _nchw for name, layer in chosen if _channels_last(layer)}
    maps = Maps(layer_fn, _ops_for, layouts=layouts, fp32=_fp32)
    x = model_input(model, x, backend)
    dims = tuple(int(d) for d in x.shape)
    hw = dims[1:3] if keras.config.image_data_format() == "channels_last" else dims[2:4]
    taps = _Taps(chosen, hw=hw, patch=patch_size(model), layouts=maps.layouts)  # token layers laid out as maps
    runners = {"torch": _run_torch, "tensorflow": _run_tensorflow, "jax": _run_jax}
    if backend not in runners:
        raise ModelError(f"the Keras backend {backend!r} is not supported; use torch, tensorflow or jax")
    with _precision(precision, backend):
        order, outputs, targets = runners[backend](model, x, taps, target, maps, need_gradients)
    return maps.finish(order, outputs, targets, shapes=maps.shapes)


def _ops_for(maps: dict[str, Any], outputs: Any) -> Any:
    """The transfer's array ops for the maps a backend made: torch tensors (the torch
    backend), :class:`DeviceArray` (TensorFlow, JAX) or numpy arrays."""
    if any(hasattr(m, "detach") for m in maps.values()) or hasattr(outputs, "detach"):
        from layerscope.capture._autograd import TORCH_OPS

        return TORCH_OPS
    xp = next((m.xp for m in maps.values() if isinstance(m, DeviceArray)), None)
    return XpOps(xp) if xp is not None else NumpyOps()


def _run_torch(
    model: Any, x: Any, taps: _Taps, target: Any, maps: Maps, need_gradients: bool
) -> tuple[list[str], Any, Any]:
    """Maps on the device, one transfer at the end (:meth:`Maps.finish`)."""
    import keras
    import torch

    from layerscope.capture._autograd import backward_to_maps

    xin = x if isinstance(x, torch.Tensor) else keras.ops.convert_to_tensor(x)
    xin = xin.detach().clone().requires_grad_(need_gradients)
    with taps, torch.set_grad_enabled(need_gradients):
        out = _output(model(xin, training=False))
    acts = taps.acts
    try:
        taps.check([n for n, _ in taps.chosen])
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
    model: Any, x: Any, taps: _Taps, target: Any, maps: Maps, need_gradients: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    import tensorflow as tf

    tnp = tf.experimental.numpy  # the maps are computed where the tensors are (no per-layer copy)
    xin = tf.convert_to_tensor(x)
    with taps:
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
    taps.check([n for n, _ in taps.chosen])
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
    model: Any, x: Any, taps: _Taps, target: Any, maps: Maps, need_gradients: bool
) -> tuple[list[str], Any, Any]:
    import jax
    import jax.numpy as jnp

    xin = jnp.asarray(x)
    wanted = [n for n, _ in taps.chosen]
    with taps:
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
