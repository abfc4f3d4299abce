"""Perturbation methods: the :class:`Probe` a method re-runs the model through, and the
run that hands one to each layer's map."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from layerscope.capture._autograd import torch_maps
from layerscope.capture._request import CaptureRequest, CaptureResult
from layerscope.capture.torch.device import eval_mode
from layerscope.capture.torch.hooks import _Hooks, capture_forward, input_hw
from layerscope.capture.torch.model_io import forward, resolve_targets, select_output
from layerscope.errors import ModelError, UsageError

logger = logging.getLogger("layerscope")


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
        targets: torch.Tensor,
        outputs: torch.Tensor,
        probabilities: bool,
        progress: Any,
        key: Any = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.module = module
        self.layer = layer
        self.input = x
        self.targets = targets
        self._outputs = outputs
        self._probabilities = probabilities
        self._progress = progress
        self._key = key
        self._autocast = autocast
        self.forwards = 0

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if self._autocast is not None:
                stack.enter_context(torch.autocast(x.device.type, dtype=self._autocast))
            return select_output(forward(self.model, x), self._key)

    def _rows(self, rows: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.targets.device)

    def _pick(self, out: torch.Tensor, rows: Any, probability: bool) -> torch.Tensor:
        if probability and not self._probabilities:
            out = torch.softmax(out.float(), dim=1)
        return out.gather(1, self.targets[self._rows(rows)][:, None])[:, 0].float()

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
        out = self._model(inputs.to(self.input.dtype))
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
            return outputs.to(output.dtype).clone()  # later in-place ops must not change the caller's tensor

        handle = self.module.register_forward_hook(replace)
        try:
            out = self._model(self.input[self._rows(rows).to(self.input.device)])
        finally:
            handle.remove()
        self._count(len(outputs))
        return self._pick(out, rows, probability)


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    return bool((out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones_like(out[:, 0]), atol=1e-4))


def perturbation(
    model: nn.Module,
    xin: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    request: CaptureRequest,
    autocast: torch.dtype | None,
) -> CaptureResult:
    from tqdm.auto import tqdm

    modules = dict(model.named_modules())
    paths = dict(layers)
    hooks = _Hooks(model, layers, hw=input_hw(xin), reshape=request.reshape)
    if callable(target):
        raise UsageError(f"a callable target works with the gradient methods, not {request.label or 'this method'}")
    out, _ = capture_forward(model, xin, hooks, False, autocast, request.output_key)
    n = int(out.shape[0])
    targets = resolve_targets(out, target)
    order = list(hooks.order)
    passes = request.forward_passes
    total = sum(passes(n, hooks.shapes[name][0]) for name in order) if passes else None
    if total is not None:
        logger.info(
            "%s: %d forward passes (%d layer%s, %d image%s) before the maps are ready",
            request.label or "perturbation method",
            total,
            len(order),
            "" if len(order) == 1 else "s",
            n,
            "" if n == 1 else "s",
        )
    probabilities = request.output == "probabilities" or (request.output is None and _looks_like_probabilities(out))
    maps = torch_maps(request.fn, layouts=hooks.layouts)
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        progress = stack.enter_context(
            tqdm(total=total, desc=request.label or None, unit="forward", disable=None, leave=False)
        )
        for name in order:
            act = hooks.acts.pop(name).detach()
            probe = Probe(
                model,
                modules[paths[name]],
                name,
                xin,
                targets,
                out,
                probabilities,
                progress,
                request.output_key,
                autocast,
            )
            maps.context = {"probe": probe}
            maps.keep(name, act, None)
    return maps.finish(order, out.detach(), targets, shapes=hooks.shapes)
