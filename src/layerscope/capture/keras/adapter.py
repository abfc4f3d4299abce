"""The :class:`KerasAdapter` for Keras 3 models: one forward and one backward pass for
every chosen layer, on the torch, TensorFlow or JAX backend.

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
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from layerscope.capture._request import CaptureRequest, CaptureResult, LayerShape, Supports
from layerscope.capture.keras._module import keras_module as _keras
from layerscope.capture.keras.backends import run
from layerscope.capture.keras.model_io import _input_spec
from layerscope.capture.keras.taps import _children, _display, _Taps, resolve_layers, walk
from layerscope.errors import UsageError
from layerscope.info import ModelInfo


class KerasAdapter:
    """The :class:`~layerscope.capture.Adapter` for Keras 3 models (any backend)."""

    name = "keras"
    supports = Supports(
        devices=("auto",),
        precisions=("default", "highest"),
        needs=frozenset({"activations", "gradients"}),
        several_inputs=False,
    )

    def resolve_device(self, spec: str | None) -> None:
        """``None``: a Keras model runs where Keras placed it; any device but ``"auto"`` is
        refused."""
        if spec not in (None, "auto"):
            raise UsageError(
                f"device={spec!r} is for PyTorch models; a Keras model runs where Keras placed it "
                "(use keras.device(...) or CUDA_VISIBLE_DEVICES)"
            )
        return None

    def placed(self, model: Any, device: None) -> contextlib.AbstractContextManager[None]:
        """Nothing to move: the model stays where Keras placed it."""
        return contextlib.nullcontext()

    def move(self, model: Any, device: None) -> None:
        """Nothing to move: the model stays where Keras placed it."""

    def accelerators(self) -> int:
        """0: layerscope does not place Keras models (Keras uses the GPUs it sees itself)."""
        return 0

    def weights_digest(self, model: Any) -> str:
        """SHA-256 over ``model.weights`` in order: each weight's path, dtype, shape and raw bytes."""
        h = hashlib.sha256()
        for w in model.weights:
            a = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
            h.update(f"{getattr(w, 'path', getattr(w, 'name', ''))}|{a.dtype}|{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def resolve_layers(self, model: Any, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
        """``(display name, layer path)`` pairs for ``spec`` (``None``: the default layers)."""
        return resolve_layers(model, spec, info)

    def layer_shapes(
        self,
        model: Any,
        size: tuple[int, int],
        info: ModelInfo | None = None,
        every_module: bool = False,
        run_model: Any = None,
    ) -> list[LayerShape]:
        """Each default layer (every leaf layer with ``every_module``) and its real per-image
        output shape, in the layer's own layout, in forward order, from one forward pass of a
        zero image. A model with a fixed input size uses its own size, not ``size``
        (``run_model`` is for torch models that take more than pixels; not used here)."""
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
        if not request.needs <= self.supports.needs:
            raise UsageError(f"{request.label or 'this method'} is available for PyTorch models only")
        if callable(targets):
            raise UsageError("a callable target is for PyTorch models; give Keras models a class index or name")
        self.resolve_device(request.device)
        return run(
            model,
            x,
            layers,
            targets,
            request.fn,
            need_gradients="gradients" in request.needs,
            precision=request.precision,
        )
