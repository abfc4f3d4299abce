"""The :class:`TorchAdapter`, the :class:`~layerscope.capture.Adapter` for
``torch.nn.Module`` models, and the one-pass runner.

Four strategies, chosen by ``CaptureRequest.needs``, over one forward-hook helper
(:class:`_Hooks`), one target resolution (:func:`resolve_targets`) and one finite-map
check with one transfer to the host (:func:`layerscope.capture._maps.host_transfer`):

* **one pass** (``"gradients"``, ``"activations"``): one forward pass and, for gradient
  methods, one backward pass for every chosen layer — of the method's own score of the
  output with ``"score"`` (Finer-CAM), and with ``"hessian"`` followed by one double
  backward for every layer together (ShapleyCAM, :func:`hessian_to_maps`);
* **perturbation**: one forward pass captures every layer; each layer's method then re-runs
  the model through a :class:`Probe` (masked inputs, or the layer's output replaced);
* **saliency**: one guided-backpropagation pass gives the input gradient
  (:func:`guided_relu`), then the one-pass capture hands it to every layer's map;
* **attention** (``"attention"``): one forward pass keeps every transformer block's attention
  weights (and, with ``"gradients"``, one backward pass their gradients); the method makes
  every block's map at once (:func:`~layerscope.capture.torch.attention.attention_pass`).

How the one pass is kept correct and cheap:

* A forward hook on each chosen module keeps the module's output ``A``. ``A`` and its
  gradient must belong to one and the same tensor, so nothing may change ``A`` in place
  later: for the pass, torch's modules with an ``inplace`` flag (``ReLU(inplace=True)``, …)
  run out of place (flags restored afterwards). If an in-place *function* still changes a
  captured output (its version counter moves), the forward pass is run again with a clone
  of each captured output handed on to the rest of the network.
* A tensor hook on each ``A`` turns ``(A, ∂y/∂A)`` into the layer's map the moment the
  gradient is known; the gradient and ``A`` are dropped right after. The map stays on the
  model's device: no host synchronisation inside the pass, one transfer at the end.
* ``torch.autograd.grad`` is asked only for the deepest captured activations, so the
  backward pass stops at the earliest chosen layer, writes no ``.grad`` and computes no
  parameter gradient.
* The input is a private copy that requires grad, so frozen parameters and an outer
  ``torch.no_grad()`` still give a graph; train/eval mode, hooks, ``inplace`` flags and the
  TF32 flags are restored afterwards, also after an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from layerscope.capture._autograd import (
    backward_to_maps,
    hessian_to_maps,
    join_scores,
    method_scores,
    precision_mode,
    torch_maps,
)
from layerscope.capture._request import CaptureRequest, CaptureResult, LayerShape, Supports
from layerscope.capture.torch.attention import attention_pass
from layerscope.capture.torch.device import eval_mode, model_dtype, placed, resolve_device
from layerscope.capture.torch.guided import guided_saliency
from layerscope.capture.torch.hooks import _Hooks, capture_forward, input_hw
from layerscope.capture.torch.layers import resolve_layers
from layerscope.capture.torch.model_io import SIZE_HINT, ModelInputs, forward, model_input, resolve_targets
from layerscope.capture.torch.probe import perturbation
from layerscope.errors import ModelError, UsageError
from layerscope.info import ModelInfo

_NOT_SEVERAL = (
    ("perturbation", "perturbation"),
    ("saliency", "guided backpropagation"),
    ("attention", "attention weights"),
)


class TorchAdapter:
    """The :class:`~layerscope.capture.Adapter` for ``torch.nn.Module`` models."""

    name = "torch"
    supports = Supports(
        devices=("auto", "cpu", "cuda", "cuda:N", "mps"),
        precisions=("default", "highest", "fast"),
        needs=frozenset(
            {"activations", "gradients", "perturbation", "saliency", "attention", "layer_scores", "score", "hessian"}
        ),
        several_inputs=True,
    )

    def resolve_device(self, spec: str | torch.device | None) -> torch.device | None:
        """``None`` for ``None`` (the model stays where it is), else the torch device
        (:func:`~layerscope.capture.torch.device.resolve_device`)."""
        return None if spec is None else resolve_device(spec)

    def placed(self, model: nn.Module, device: torch.device | None) -> Any:
        """The model on ``device`` for the block, moved back afterwards; yields its device."""
        return placed(model, device)

    def move(self, model: nn.Module, device: torch.device | None) -> None:
        """The model moved to ``device`` for good (``None``: left where it is)."""
        if device is not None:
            model.to(device)

    def accelerators(self) -> int:
        """The CUDA devices this process sees."""
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0

    def weights_digest(self, model: nn.Module) -> str:
        """SHA-256 over the state dict in name order: each entry's name, dtype, shape and raw bytes."""
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            a = t.detach().cpu().contiguous()
            h.update(f"{name}|{a.dtype}|{tuple(a.shape)}".encode())
            if a.numel():  # the tensor's own bytes, hashed in place (no copy of 500 MB of VGG16)
                h.update(a.view(-1).view(dtype=torch.uint8).numpy())
        return h.hexdigest()

    def resolve_layers(self, model: nn.Module, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
        """``(display name, module path)`` pairs for ``spec`` (``None``: the default layers)."""
        return resolve_layers(model, spec, info)

    def layer_shapes(
        self,
        model: nn.Module,
        size: tuple[int, int],
        info: ModelInfo | None = None,
        every_module: bool = False,
        run_model: Any = None,
    ) -> list[LayerShape]:
        """Each default layer (every leaf module with ``every_module``) and its real per-image
        output shape for a ``size`` = ``(height, width)`` input, in forward order, from one
        forward pass of a zero image without gradients (``run_model(model, x)`` instead of
        ``model(x)`` for a model that takes more than pixels: CLIP's image tower)."""
        if every_module:
            friendly = {p: n for n, p in (info.layers if info is not None else {}).items()}
            chosen = [(friendly.get(p, p), p) for p, m in model.named_modules() if p and not list(m.children())]
        else:
            chosen = resolve_layers(model, None, info)
        paths = dict(chosen)
        channels = next((int(m.in_channels) for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
        with placed(model, None) as device:
            x = torch.zeros(1, channels, *(int(s) for s in size), device=device, dtype=model_dtype(model))
            hooks = _Hooks(model, chosen, strict=False)
            with eval_mode(model), torch.no_grad(), hooks:
                forward(model, x, run_model)
        return [LayerShape(n, paths[n], hooks.shapes[n]) for n in hooks.order]

    def run(
        self,
        model: nn.Module,
        x: Any,
        layers: Sequence[tuple[str, str]],
        targets: Any,
        request: CaptureRequest,
    ) -> CaptureResult:
        """What ``request`` asks for (see :class:`~layerscope.capture.CaptureRequest`)."""
        device = resolve_device(request.device) if request.device is not None else None
        hint = SIZE_HINT.set(request.size_hint)
        try:
            return self._run(model, x, layers, targets, request, device)
        finally:
            SIZE_HINT.reset(hint)

    def _run(
        self,
        model: nn.Module,
        x: Any,
        layers: Sequence[tuple[str, str]],
        targets: Any,
        request: CaptureRequest,
        device: torch.device | None,
    ) -> CaptureResult:
        with placed(model, device) as dev, precision_mode(request.precision, dev) as autocast:
            xin = model_input(model, x, dev, channels_last=request.precision == "fast")
            needs = request.needs
            if isinstance(xin, ModelInputs) and needs & {"perturbation", "saliency", "attention"}:
                how = next(w for k, w in _NOT_SEVERAL if k in needs)
                raise UsageError(
                    f"several model inputs work with the one-pass methods (Grad-CAM family, Eigen-CAM), "
                    f"not {request.label or 'this method'} ({how})"
                )
            if "attention" in needs:
                return attention_pass(model, xin, layers, targets, request, autocast)
            if "perturbation" in needs:
                return perturbation(model, xin, layers, targets, request, autocast)
            context: dict[str, Any] = {}
            need_grad = "gradients" in needs
            if request.score is not None and callable(targets):
                raise UsageError(
                    f"{request.label or 'this method'} explains its own score of the output; "
                    "give it a class index or name as the target, not a callable"
                )
            if "saliency" in needs:
                if callable(targets):
                    raise UsageError(f"a callable target works with the gradient methods, not {request.label}")
                context["saliency"], targets = guided_saliency(model, xin, targets, request, autocast)
            return _one_pass(model, xin, layers, targets, request, autocast, need_grad, context)


def _one_pass(
    model: nn.Module,
    xin: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    request: CaptureRequest,
    autocast: torch.dtype | None,
    need_grad: bool,
    context: dict[str, Any],
) -> CaptureResult:
    hooks = _Hooks(model, layers, hw=input_hw(xin), reshape=request.reshape)
    maps = torch_maps(request.fn, context, hooks.layouts)
    try:
        out, scores = capture_forward(model, xin, hooks, need_grad, autocast, request.output_key, target)
        targets = resolve_targets(out, getattr(target, "class_index", None) if scores is not None else target)
        order = list(hooks.order)
        if need_grad:
            score = None
            if scores is not None:
                score = scores.sum()
                if not score.requires_grad:
                    raise ModelError("the target callable's scores do not depend on the chosen layers")
            elif request.score is not None:
                score = method_scores(out, targets, request.score)
            backward = hessian_to_maps if "hessian" in request.needs else backward_to_maps
            backward(out, targets, hooks.acts, maps.keep, score, blocked=maps.blocked)
        else:
            for name in order:
                maps.keep(name, hooks.acts.pop(name), None)
        result = maps.finish(
            order,
            out.detach(),
            targets,
            shapes=hooks.shapes,
            scores=scores,
            join=join_scores if scores is not None else None,
        )
        result.detections = hooks.detections
        return result
    finally:
        hooks.acts.clear()
