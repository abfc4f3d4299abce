"""Guided backpropagation: every ReLU call rewritten while a block runs
(:func:`guided_relu`), and the guided input gradient of a batch (:func:`guided_saliency`)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from layerscope.capture._autograd import fp32, target_scores
from layerscope.capture._request import CaptureRequest
from layerscope.capture.torch.device import eval_mode
from layerscope.capture.torch.model_io import check_scores, forward, resolve_targets, select_output
from layerscope.errors import ModelError


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


def guided_saliency(
    model: nn.Module, xin: torch.Tensor, target: Any, request: CaptureRequest, autocast: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided backpropagation: ``(∂y/∂x through guided ReLUs, targets)`` for a batch."""
    xg = xin.detach().clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.enable_grad())
        mode = stack.enter_context(guided_relu())
        if autocast is not None:
            stack.enter_context(torch.autocast(xin.device.type, dtype=autocast))
        out = select_output(forward(model, xg), request.output_key)
    check_scores(out)
    targets = resolve_targets(out, target)
    score = target_scores(out, targets)
    if not score.requires_grad:
        raise ModelError("the model's output does not depend on its input")
    (saliency,) = torch.autograd.grad(score, xg)
    if mode.calls == 0:
        warnings.warn(
            f"{request.label or 'guided backpropagation'}: the model calls no ReLU, so guided backpropagation "
            "is the plain input gradient",
            stacklevel=4,
        )
    return fp32(saliency.detach()), targets
