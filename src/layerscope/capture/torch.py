"""PyTorch capture: one forward and one backward pass for every chosen layer.

How the pass is kept correct and cheap:

* A forward hook on each chosen module keeps the module's output ``A``. ``A`` and its
  gradient must belong to one and the same tensor, so nothing may change ``A`` in place
  later: for the pass, modules with an ``inplace`` flag (``ReLU(inplace=True)``, …) run out
  of place (flags restored afterwards). If an in-place *function* still changes a captured
  output (its version counter moves), the forward pass is run again with a clone of each
  captured output handed on to the rest of the network — correct, at the cost of a second
  forward, for that rare kind of model only.
* A tensor hook on each ``A`` turns ``(A, ∂y/∂A)`` into the layer's map the moment the
  gradient is known; the gradient and ``A`` are dropped right after.
* ``torch.autograd.grad`` is asked only for the deepest captured activations (those with no
  other captured activation below them in the graph), so the backward pass stops at the
  earliest chosen layer, writes no ``.grad`` and computes no parameter gradient.
* The input is a private copy that requires grad, so frozen parameters and an outer
  ``torch.no_grad()`` still give a graph; train/eval mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from layerscope.capture import CaptureResult, given_targets, match_layers
from layerscope.errors import ModelError, UsageError


def layer_names(model: nn.Module) -> dict[str, str]:
    """Every addressable layer: the model's friendly names (if any) first, then modules."""
    names: dict[str, str] = dict(getattr(model, "layerscope_aliases", {}) or {})
    for path, _ in model.named_modules():
        if path:
            names.setdefault(path, path)
    return names


def conv_layers(model: nn.Module) -> list[str]:
    """Default layers: the friendly names of a built-in model, else every ``Conv2d``."""
    aliases = getattr(model, "layerscope_aliases", None)
    if aliases:
        return list(aliases)
    return [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def resolve_layers(model: nn.Module, layers: Any) -> list[tuple[str, str]]:
    """``(display name, module path)`` pairs; see :func:`layerscope.capture.match_layers`."""
    default = conv_layers(model)
    if layers is None and not default:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer; name the layers to explain")
    return match_layers(layers, layer_names(model), default)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode; afterwards every module's own train/eval flag is as it was."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextlib.contextmanager
def out_of_place(model: nn.Module) -> Iterator[None]:
    """Run torch's own modules that have a true ``inplace`` flag (``nn.ReLU``, ``nn.Dropout``,
    …) out of place; restore the flags. A user module's attribute of that name is left alone."""
    changed = [
        m
        for m in model.modules()
        if getattr(m, "inplace", None) is True and type(m).__module__.startswith("torch.nn.modules")
    ]
    try:
        for m in changed:
            m.inplace = False
        yield
    finally:
        for m in changed:
            m.inplace = True


def _deepest(acts: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The captured activations with no other captured activation below them in the graph.

    Asking autograd for these alone reaches every captured activation (each lies on a path
    from the score to one of them) and stops the backward pass there.
    """
    nodes = {a.grad_fn: a for a in acts.values() if a.grad_fn is not None}
    deepest = []
    for node, act in nodes.items():
        stack = [n for n, _ in node.next_functions if n is not None]
        seen: set[Any] = set()
        below = False
        while stack:
            n = stack.pop()
            if n in nodes:
                below = True
                break
            if n in seen:
                continue
            seen.add(n)
            stack.extend(c for c, _ in n.next_functions if c is not None)
        if not below:
            deepest.append(act)
    return deepest


def _output_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(f"the model returned {type(out).__name__}; expected a (N, classes) tensor")


def run(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: int | Sequence[int] | None,
    layer_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    need_gradients: bool = True,
) -> CaptureResult:
    """Capture the chosen layers in one forward (and one backward) pass.

    Args:
        model: any ``nn.Module`` returning ``(N, classes)`` scores.
        x: the preprocessed batch ``(N, C, H, W)``; copied, never modified.
        layers: ``(display name, module path)`` pairs from :func:`resolve_layers`.
        target: ``None`` (top-1 per image), one class index, or one per image.
        layer_fn: ``(A, G) -> (N, h, w)`` map, called once per layer.
        need_gradients: run the backward pass (``False`` for gradient-free methods).

    Returns:
        A :class:`~layerscope.capture.CaptureResult` (maps already on the host).
    """
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    modules = dict(model.named_modules())
    device = model_device(model)
    acts: dict[str, torch.Tensor] = {}
    versions: dict[str, int] = {}
    cloning = False
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    cams: dict[str, np.ndarray] = {}
    nonfinite: list[str] = []
    handles: list[Any] = []
    stack = contextlib.ExitStack()

    def keep(name: str, act: torch.Tensor, grad: torch.Tensor | None) -> None:
        with torch.no_grad():
            cam = layer_fn(act.detach(), grad)
            if not math.isfinite(float(cam.sum())):  # one reduction: NaN/inf anywhere makes the sum non-finite
                nonfinite.append(name)
                cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
            cams[name] = cam.float().cpu().numpy()

    def make_hook(name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if name in acts:
                warnings.warn(
                    f"layer {name!r} runs more than once per forward pass; its first call is used",
                    stacklevel=2,
                )
                return None
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
                raise UsageError(f"layer {name!r} outputs {shape}, not a (N, C, h, w) feature map")
            acts[name] = output
            versions[name] = output._version
            order.append(name)
            shapes[name] = tuple(int(s) for s in output.shape[1:])
            return output.clone() if cloning else None

        return hook

    def forward(clone: bool) -> torch.Tensor:
        nonlocal cloning
        cloning = clone
        acts.clear()
        order.clear()
        xin = x.detach().to(device).clone().requires_grad_(need_gradients)
        return _output_tensor(model(xin))

    try:
        for name, path in layers:
            handles.append(modules[path].register_forward_hook(make_hook(name)))
        stack.enter_context(eval_mode(model))
        stack.enter_context(out_of_place(model))
        stack.enter_context(torch.set_grad_enabled(need_gradients))  # also under an outer no_grad
        out = forward(clone=False)
        if any(acts[n]._version != versions[n] for n in order):  # changed in place by a function
            out = forward(clone=True)
        _check_forward(out, layers, acts)
        _n, k = out.shape
        targets = _targets(out, target, k)
        if need_gradients:
            backward_to_maps(out, targets, acts, keep)
        else:
            for name in order:
                keep(name, acts.pop(name), None)
        outputs = out.detach().float().cpu().numpy()
    finally:
        for h in handles:
            h.remove()
        stack.close()
        acts.clear()
    return CaptureResult(layers=order, shapes=shapes, cams=cams, outputs=outputs, targets=targets, nonfinite=nonfinite)


def backward_to_maps(
    out: torch.Tensor,
    targets: np.ndarray,
    acts: dict[str, torch.Tensor],
    keep: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> None:
    """The one backward pass, shared by the torch adapter and Keras on the torch backend.

    The gradient of the target scores ``Σ_i out[i, targets[i]]`` with respect to each
    captured activation goes to ``keep(name, activation, gradient)`` (under ``no_grad``) the
    moment it is known, and ``acts`` lets go of both. Autograd is asked only for the deepest
    activations, so the pass stops there. A layer the score does not depend on gets a zero
    gradient.
    """
    with torch.enable_grad():  # the score too must be in the graph under an outer no_grad
        score = out.gather(1, torch.as_tensor(targets, device=out.device)[:, None]).float().sum()
    if not score.requires_grad:
        raise ModelError("the model's output does not depend on the chosen layers")
    for name, act in list(acts.items()):
        if act.grad_fn is None:
            raise ModelError(f"layer {name!r} is not connected to the output")

        def on_grad(grad: torch.Tensor, name: str = name) -> None:
            with torch.no_grad():
                keep(name, acts.pop(name), grad)

        act.register_hook(on_grad)
    torch.autograd.grad(score, _deepest(acts), allow_unused=True)
    with torch.no_grad():
        for name in list(acts):  # a layer the score does not depend on
            act = acts.pop(name)
            keep(name, act, torch.zeros_like(act))


def _check_forward(out: torch.Tensor, layers: Sequence[tuple[str, str]], acts: dict[str, Any]) -> None:
    """The model gave ``(N, classes)`` scores and every chosen layer ran."""
    if out.ndim != 2:
        raise ModelError(f"the model's output has shape {tuple(out.shape)}; expected (N, classes)")
    missing = [n for n, _ in layers if n not in acts]
    if missing:
        raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass")


def _targets(out: torch.Tensor, target: int | Sequence[int] | None, k: int) -> np.ndarray:
    t = given_targets(target, out.shape[0], k)
    return out.detach().argmax(dim=1).cpu().numpy().astype(np.int64) if t is None else t


class TorchAdapter:
    """The :class:`~layerscope.capture.Adapter` for ``torch.nn.Module`` models."""

    name = "torch"

    def resolve_layers(self, model: nn.Module, spec: Any, info: Any = None) -> list[tuple[str, str]]:
        return resolve_layers(model, spec)  # TEMPORARY shim: reads the legacy attributes

    def layer_shapes(self, model: nn.Module, size: tuple[int, int], info: Any = None, every_module: bool = False) -> Any:
        from layerscope.summary import layer_shapes

        return layer_shapes(model, size, every_module)

    def run(self, model: nn.Module, x: Any, layers: Sequence[tuple[str, str]], targets: Any, request: Any) -> CaptureResult:
        if request.needs in ("perturbation", "saliency"):
            from layerscope.capture import torch_extra

            extra: dict[str, Any] = {"kind": "perturbation" if request.needs == "perturbation" else "pixel"}
            if request.forward_passes is not None:
                extra["forward_passes"] = request.forward_passes
            return torch_extra.run(
                model, x, layers, targets, request.fn, need_gradients=request.layer_gradients, label=request.label, **extra
            )
        return run(model, x, layers, targets, request.fn, need_gradients=request.needs == "gradients")
