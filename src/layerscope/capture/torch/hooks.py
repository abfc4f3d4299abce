"""The one forward-hook helper (:class:`_Hooks`) and the forward pass that captures the
chosen layers' outputs (:func:`capture_forward`)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from layerscope.capture.torch.device import eval_mode, out_of_place
from layerscope.capture.torch.layers import ATTENTION_INPUT_NAMES
from layerscope.capture.torch.layouts import Layout, infer_layout, patch_size, prefix_tokens
from layerscope.capture.torch.model_io import check_scores, custom_scores, forward, select_output
from layerscope.errors import ModelError, UsageError
from layerscope.targets._detections import as_record, class_table, is_detection_list, parse


def input_hw(x: torch.Tensor) -> tuple[int, int] | None:
    """The ``(H, W)`` of an image batch (``None`` for other inputs)."""
    return (int(x.shape[-2]), int(x.shape[-1])) if x.ndim == 4 else None


class _Hooks:
    """The one forward-hook helper: keeps each chosen module's first output of a pass.

    ``strict``: an output that is not an ``(N, C, h, w)`` tensor is an error (for maps);
    otherwise any tensor's shape is recorded (for listings). ``clone``: hand a clone of each
    captured output on to the rest of the network (when an in-place function changed one).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[tuple[str, str]],
        strict: bool = True,
        hw: tuple[int, int] | None = None,
        reshape: Any = None,
    ) -> None:
        self.modules = dict(model.named_modules())
        self.hw = hw
        self.reshape = reshape
        self.patch = patch_size(model) if strict else None
        self.prefix = prefix_tokens(model) if strict else None
        self.layouts: dict[str, Layout] = {}
        self.layers = list(layers)
        self.strict = strict
        self.clone = False
        self.acts: dict[str, torch.Tensor] = {}
        self.versions: dict[str, int] = {}
        self.order: list[str] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        #: a detector's detections per image (host arrays, for drawing), else ``None``
        self.detections: list[dict[str, Any]] | None = None
        self._handles: list[Any] = []

    def reset(self, clone: bool = False) -> None:
        self.clone = clone
        self.detections = None
        self.acts.clear()
        self.versions.clear()
        self.order.clear()

    def _hook(self, name: str, path: str) -> Callable[..., Any]:
        attention_input = path.rsplit(".", 1)[-1] in ATTENTION_INPUT_NAMES

        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if name in self.acts:
                if self.strict:
                    warnings.warn(
                        f"layer {name!r} runs more than once per forward pass; its first call is used", stacklevel=2
                    )
                return None
            rest: tuple[Any, ...] | None = None
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output, rest = output[0], tuple(output[1:])  # (hidden states, attentions …) blocks
            if not isinstance(output, torch.Tensor):
                if self.strict:
                    kind = type(output).__name__
                    raise UsageError(f"layer {name!r} outputs a {kind}, not a (N, C, h, w) feature map")
                return None
            if self.strict:
                shape = tuple(int(s) for s in output.shape)
                layout = infer_layout(name, shape, self.hw, self.patch, self.reshape, self.prefix)
                if attention_input and layout.note:  # a block's LayerNorm in front of its attention
                    layout.note = f"attention input, {layout.note}"
                self.layouts[name] = layout
            self.acts[name] = output
            self.versions[name] = output._version
            self.order.append(name)
            self.shapes[name] = tuple(int(s) for s in output.shape[1:])
            if not self.clone:
                return None
            return output.clone() if rest is None else (output.clone(), *rest)

        return hook

    def __enter__(self) -> _Hooks:
        try:
            for name, path in self.layers:
                self._handles.append(self.modules[path].register_forward_hook(self._hook(name, path)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def changed_in_place(self) -> bool:
        """Whether a function changed a captured output in place (its version moved)."""
        return any(self.acts[n]._version != self.versions[n] for n in self.order)

    def check_ran(self) -> None:
        missing = [n for n, _ in self.layers if n not in self.acts]
        if missing:
            raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass")


def capture_forward(
    model: nn.Module,
    xin: torch.Tensor,
    hooks: _Hooks,
    need_grad: bool,
    autocast: torch.dtype | None,
    key: Any,
    target: Any = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass with ``hooks`` (run again with clones if an in-place function changed
    a captured output); returns the ``(N, classes)`` output, checked, and for a callable
    ``target`` its ``(N,)`` scores of the model's whole output (else ``None``). A target with
    ``run_model(model, x)`` runs the model itself (a CLIP target: the image tower and its
    similarity to fixed text embeddings).

    A detector's output (:mod:`layerscope.targets._detections`) is parsed once: by a box
    target (``detections_of``: its scores, its ``(N, K)`` confidences as the output), or,
    for a class index or no target, a torchvision-style list of dicts becomes ``(N, K)``
    per-label best scores; either way ``hooks.detections`` keeps the boxes for drawing."""

    def run(clone: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        hooks.reset(clone)
        xg = xin.requires_grad_(need_grad) if need_grad else xin
        with contextlib.ExitStack() as stack:
            if autocast is not None:
                stack.enter_context(torch.autocast(xin.device.type, dtype=autocast))
            raw = forward(model, xg, getattr(target, "run_model", None) if callable(target) else None)
            if hasattr(target, "detections_of"):  # a box target: the detector's output parsed once
                parsed = target.detections_of(raw)
                scores = custom_scores(target.scored, parsed, len(xin))
                hooks.detections = target.records(parsed, input_hw(xin))
                return target.outputs_of(parsed), scores
            if not callable(target):
                if key is None and is_detection_list(raw):  # torchvision-style detections
                    parsed = parse(raw)
                    hooks.detections = [{**as_record(d, input_hw(xin)), "explained": None} for d in parsed]
                    return class_table(parsed), None
                return select_output(raw, key), None
            if hasattr(target, "scores_of"):  # a layerscope.targets region: it scores the chosen output
                out = select_output(raw, key) if key is not None else target.scores_of(raw)
                scores = custom_scores(target, out, len(xin))
            else:
                scores = custom_scores(target, raw, len(xin))
                out = select_output(raw, key)
            if out.ndim == 4:  # (N, K, H, W) per-pixel scores: each class's mean, for display
                out = out.detach().float().mean(dim=(2, 3))
            return out, scores

    with eval_mode(model), out_of_place(model), torch.set_grad_enabled(need_grad), hooks:
        out, scores = run(clone=False)
        if hooks.changed_in_place():
            out, scores = run(clone=True)
    hooks.check_ran()
    check_scores(out)
    return out, scores
