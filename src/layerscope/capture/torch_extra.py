"""PyTorch capture for the methods that need more than one pass: perturbation methods
(Score-CAM, Ablation-CAM) and pixel methods built on guided backpropagation.

Perturbation: one forward pass captures every chosen layer's activation; then each layer's
method gets a :class:`Probe` through which it re-runs the model, in batches, on masked
inputs (:meth:`Probe.score`) or with the layer's output replaced (:meth:`Probe.score_replaced`,
a forward hook that returns the replacement). The number of forward passes is announced
(logged) before they start and a progress bar counts them.

Pixel: one guided forward and backward pass gives the input saliency (:func:`guided_relu`
rewrites every ReLU — ``nn.ReLU`` modules, in-place or not, and functional ``relu`` calls —
for that pass only, so the model is never modified); then the ordinary one-pass capture of
:mod:`layerscope.capture.torch` runs with the saliency handed to each layer's map.

The math stays in :mod:`layerscope.methods`; this module only touches the model. Hooks and
modes live in ``with``/``finally`` blocks: the model's mode, hooks and parameters are left as
they were.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from layerscope.capture import CaptureResult
from layerscope.capture import torch as base
from layerscope.errors import ModelError, UsageError

logger = logging.getLogger("layerscope")

KINDS = ("perturbation", "pixel")


class _GuidedReLU(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes ``grad · [grad > 0] · [x > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool) -> torch.Tensor:  # type: ignore[override]
        if inplace:
            out = x.clamp_(min=0)
            ctx.mark_dirty(x)
        else:
            out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0), None


_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}
_RELU = {torch.relu, torch.Tensor.relu, F.relu} | _RELU_INPLACE


class _GuidedMode(TorchFunctionMode):
    """Turns every ReLU call (module or functional) into a guided ReLU while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELU:
            x = args[0]
            inplace = func in _RELU_INPLACE or (func is F.relu and bool(kwargs.get("inplace", args[1:2] == (True,))))
            self.calls += 1
            return _GuidedReLU.apply(x, inplace)
        return func(*args, **kwargs)


@contextlib.contextmanager
def guided_relu() -> Iterator[_GuidedMode]:
    """Within the block every ReLU (``nn.ReLU`` in-place or not, ``F.relu``, ``torch.relu``,
    ``Tensor.relu``) back-propagates only positive gradients where its input was positive.

    Nothing in any model is changed: the calls are intercepted, and only inside the block.
    ``mode.calls`` counts the ReLUs rewritten.
    """
    mode = _GuidedMode()
    with mode:
        yield mode


class Probe:
    """What a perturbation method may do with the model, for one layer.

    Every call runs the model in eval mode without gradients, counts its forward passes on
    the shared progress bar, and returns the target's scores, one per input, on the model's
    device.
    """

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        layer: str,
        x: torch.Tensor,
        targets: np.ndarray,
        outputs: torch.Tensor,
        probabilities: bool,
        progress: Any,
    ) -> None:
        self.model = model
        self.module = module
        self.layer = layer
        self.input = x
        self.targets = torch.as_tensor(targets, dtype=torch.long, device=outputs.device)
        self._outputs = outputs
        self._probabilities = probabilities
        self._progress = progress
        self.forwards = 0

    def _rows(self, rows: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.targets.device)

    def _pick(self, out: Any, rows: Any, probability: bool) -> torch.Tensor:
        out = base._output_tensor(out)
        if probability and not self._probabilities:
            out = torch.softmax(out, dim=1)
        return out.gather(1, self.targets[self._rows(rows)][:, None])[:, 0]

    def _count(self, m: int) -> None:
        self.forwards += m
        self._progress.update(m)

    def base_scores(self, probability: bool = False) -> torch.Tensor:
        """The target's output (or its softmax probability) for each unperturbed image."""
        return self._pick(self._outputs, np.arange(len(self.targets)), probability)

    def score(self, inputs: torch.Tensor, rows: Any, probability: bool = False) -> torch.Tensor:
        """The target's output for each input; ``rows[m]`` is the image input ``m`` came from
        (its target is scored). ``probability``: the softmax probability instead of the raw
        output (a model whose output already is a probability is used as it is)."""
        with torch.no_grad():
            out = self.model(inputs)
        self._count(len(inputs))
        return self._pick(out, rows, probability)

    def score_replaced(self, outputs: torch.Tensor, rows: Any, probability: bool = False) -> torch.Tensor:
        """The target's output when this layer's output is ``outputs`` ``(M, C, h, w)``
        (a forward hook returns it) and image ``rows[m]`` is the input of copy ``m``."""
        done = False

        def replace(module: nn.Module, inputs: Any, output: Any) -> Any:
            nonlocal done
            if done:
                return None
            done = True
            if tuple(output.shape) != tuple(outputs.shape):
                raise ModelError(
                    f"layer {self.layer!r}: replacement of shape {tuple(outputs.shape)} for an output "
                    f"of shape {tuple(output.shape)}"
                )
            return outputs.clone()  # later in-place ops must not change the caller's tensor

        handle = self.module.register_forward_hook(replace)
        try:
            with torch.no_grad():
                out = self.model(self.input[self._rows(rows).to(self.input.device)])
        finally:
            handle.remove()
        self._count(len(outputs))
        return self._pick(out, rows, probability)


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    return bool((out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones_like(out[:, 0]), atol=1e-4))


def run(
    model: nn.Module,
    x: Any,
    layers: Sequence[tuple[str, str]],
    target: int | Sequence[int] | None,
    layer_fn: Callable[..., torch.Tensor],
    need_gradients: bool = True,
    *,
    kind: str,
    forward_passes: Callable[[int, int], int] | None = None,
    label: str = "",
) -> CaptureResult:
    """Capture the chosen layers for a perturbation or pixel method.

    Args:
        model: any ``nn.Module`` returning ``(N, classes)`` scores.
        x: the preprocessed batch ``(N, C, H, W)``; copied, never modified.
        layers: ``(display name, module path)`` pairs.
        target: ``None`` (top-1 per image), one class index, or one per image.
        layer_fn: ``layer_fn(A, G, probe=...)`` (perturbation) or ``layer_fn(A, G,
            saliency=...)`` (pixel) → ``(N, h, w)`` map.
        need_gradients: pixel methods: whether ``layer_fn`` needs the layer gradients.
        kind: ``"perturbation"`` or ``"pixel"``.
        forward_passes: perturbation: ``(images, channels) -> passes`` for one layer, to
            announce the cost before starting.
        label: the method's name, for the log and the progress bar.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if kind == "perturbation":
        return _run_perturbation(model, x, layers, target, layer_fn, forward_passes, label)
    if kind == "pixel":
        return _run_pixel(model, x, layers, target, layer_fn, need_gradients, label)
    raise UsageError(f"unknown method kind {kind!r}; expected one of {', '.join(KINDS)}")


def guided_saliency(model: nn.Module, x: torch.Tensor, target: Any, label: str = "") -> tuple[torch.Tensor, np.ndarray]:
    """Guided backpropagation: ``(∂y/∂x through guided ReLUs, targets)`` for a batch."""
    with base.eval_mode(model), torch.enable_grad(), guided_relu() as mode:
        xin = x.detach().to(base.model_device(model)).clone().requires_grad_(True)
        out = base._output_tensor(model(xin))
        base._check_forward(out, [], {})
        targets = base._targets(out, target, out.shape[1])
        score = out.gather(1, torch.as_tensor(targets, device=out.device)[:, None]).sum()
        if not score.requires_grad:
            raise ModelError("the model's output does not depend on its input")
        (saliency,) = torch.autograd.grad(score, xin)
    if mode.calls == 0:
        warnings.warn(
            f"{label or 'guided backpropagation'}: the model calls no ReLU, so guided backpropagation "
            "is the plain input gradient",
            stacklevel=3,
        )
    return saliency.detach(), targets


def _run_pixel(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    layer_fn: Callable[..., torch.Tensor],
    need_gradients: bool,
    label: str,
) -> CaptureResult:
    saliency, targets = guided_saliency(model, x, target, label)
    return base.run(
        model,
        x,
        layers,
        targets,
        lambda a, g: layer_fn(a, g, saliency=saliency),
        need_gradients=need_gradients,
    )


def _run_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    layer_fn: Callable[..., torch.Tensor],
    forward_passes: Callable[[int, int], int] | None,
    label: str,
) -> CaptureResult:
    from tqdm.auto import tqdm

    modules = dict(model.named_modules())
    paths = dict(layers)
    acts: dict[str, torch.Tensor] = {}
    order: list[str] = []
    handles: list[Any] = []

    def make_hook(name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if name in acts:
                return None
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
                raise UsageError(f"layer {name!r} outputs {shape}, not a (N, C, h, w) feature map")
            acts[name] = output.detach()
            order.append(name)
            return output.clone()  # a later in-place op changes the clone, never the capture

        return hook

    cams: dict[str, np.ndarray] = {}
    nonfinite: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(base.eval_mode(model))
        stack.enter_context(torch.no_grad())
        try:
            for name, path in layers:
                handles.append(modules[path].register_forward_hook(make_hook(name)))
            xin = x.detach().to(base.model_device(model)).clone()
            out = base._output_tensor(model(xin))
        finally:
            for h in handles:
                h.remove()
        base._check_forward(out, layers, acts)
        n, k = out.shape
        targets = base._targets(out, target, k)
        shapes = {name: tuple(int(s) for s in acts[name].shape[1:]) for name in order}
        total = sum(forward_passes(n, shapes[name][0]) for name in order) if forward_passes else None
        if total is not None:
            logger.info(
                "%s: %d forward passes (%d layer%s, %d image%s) before the maps are ready",
                label or "perturbation method",
                total,
                len(order),
                "" if len(order) == 1 else "s",
                n,
                "" if n == 1 else "s",
            )
        probabilities = getattr(model, "layerscope_outputs", None) == "probabilities" or (
            getattr(model, "layerscope_outputs", None) is None and _looks_like_probabilities(out)
        )
        progress = stack.enter_context(tqdm(total=total, desc=label or None, unit="forward", disable=None, leave=False))
        for name in order:
            act = acts.pop(name)
            probe = Probe(model, modules[paths[name]], name, xin, targets, out, probabilities, progress)
            cam = layer_fn(act, None, probe=probe)
            if not bool(torch.isfinite(cam).all()):
                nonfinite.append(name)
                cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
            cams[name] = cam.float().cpu().numpy()
        outputs = out.float().cpu().numpy()
    return CaptureResult(layers=order, shapes=shapes, cams=cams, outputs=outputs, targets=targets, nonfinite=nonfinite)
