"""A torch model's inputs and outputs: the private input copy, the forward call (shape
errors as one clear line), the scores chosen from the output and checked, the targets."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from layerscope.capture._targets import given_targets
from layerscope.capture.torch.device import model_dtype
from layerscope.errors import LayerscopeError, ModelError, UsageError

_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels")
_TOO_SMALL = (
    "Output size is too small",
    "Kernel size can't be greater than actual input size",
    "non-zero size for non-batch dimensions",
    "smaller than kernel size",
    "pad should be at most half",
    "Padding size should be less than",
)
_WRONG_SIZE = ("mat1 and mat2 shapes cannot be multiplied", "shapes cannot be multiplied", "size mismatch")
_SIZE_HINT = "`--size N` on the command line, `Preprocess(size=(N, N))` or `ModelInfo(preprocess=...)` in Python"


class ModelInputs:
    """Several model inputs, called as ``model(*args, **kwargs)``: a tuple batch gives
    ``args``, a dict batch ``kwargs``. ``image`` is the first 4-D floating tensor (its size and
    batch count stand for the batch's)."""

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.image = next((t for t in self.tensors() if t.ndim == 4 and t.is_floating_point()), None)
        if self.image is None:
            raise UsageError(
                "several model inputs need a 4-D floating tensor (N, C, H, W) among them: the picture the maps "
                "are drawn over"
            )

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelInputs:
        """The inputs with ``fn`` applied to every tensor (anything else as it is)."""

        def f(v: Any) -> Any:
            return fn(v) if isinstance(v, torch.Tensor) else v

        return ModelInputs(tuple(f(v) for v in self.args), {k: f(v) for k, v in self.kwargs.items()})

    def requires_grad_(self, flag: bool = True) -> ModelInputs:
        for t in self.tensors():
            if t.is_floating_point():
                t.requires_grad_(flag)
        return self

    @property
    def device(self) -> torch.device:
        return self.image.device  # type: ignore[union-attr]

    @property
    def ndim(self) -> int:
        return self.image.ndim  # type: ignore[union-attr]

    @property
    def shape(self) -> torch.Size:
        return self.image.shape  # type: ignore[union-attr]

    def __len__(self) -> int:
        return int(self.image.shape[0])  # type: ignore[union-attr]

    def __call__(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


#: A hint about the input the model takes (``ModelInfo.size_hint``), for the length of a run.
SIZE_HINT: contextvars.ContextVar[str | None] = contextvars.ContextVar("layerscope_size_hint", default=None)

_SHAPE_WORDS = ("shape", "size", "dimension", "mismatch")


def forward(
    model: nn.Module, x: torch.Tensor | ModelInputs, call: Callable[[nn.Module, Any], Any] | None = None
) -> Any:
    """``model(x)`` (``model(*args, **kwargs)`` for :class:`ModelInputs`; ``call(model, x)``
    for a target that says how to run the model), with the model's own errors said as the
    model's.

    Raises:
        UsageError: an input of the wrong size (a fixed-input-size model), smaller than the
            network's down-sampling allows, or with the wrong number of channels.
        ModelError: any other exception inside the model's ``forward`` (its type and message
            kept, with a hint to check the input size for a shape error), or the model
            calling ``sys.exit``.
    """
    try:
        if call is not None:
            return call(model, x)
        return x(model) if isinstance(x, ModelInputs) else model(x)
    except LayerscopeError:
        raise  # layerscope's own hooks (a layer it cannot lay out, a probe's replacement)
    except SystemExit as e:
        raise ModelError(
            f"the model's forward called sys.exit({e.code!r}) while layerscope ran it; the model's code, not "
            "layerscope, ended there"
        ) from None
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hw = "×".join(str(int(s)) for s in x.shape[2:]) if x.ndim >= 3 else str(tuple(x.shape))
        hint = SIZE_HINT.get() or _SIZE_HINT
        if isinstance(e, RuntimeError):
            ch = _CHANNELS.search(msg)
            if ch:
                want, got = ch.groups()
                raise UsageError(
                    f"the model takes {want}-channel images but was given {got} channels: pass a "
                    f"{want}-channel tensor (N, {want}, H, W), or a preprocess that makes one"
                ) from None
            if any(s in msg for s in _TOO_SMALL):
                raise UsageError(
                    f"the {hw} input is smaller than the network's down-sampling allows ({msg}); "
                    f"give a larger input size ({hint})"
                ) from None
            if any(s in msg for s in _WRONG_SIZE):
                raise UsageError(
                    f"the model does not take {hw} inputs ({msg}): it was built for a fixed input size; "
                    f"give that size ({hint})"
                ) from None
        shape = any(w in msg.lower() for w in _SHAPE_WORDS)
        advice = f"; is {hw} the input size it takes? ({hint})" if shape else ""
        raise ModelError(f"the model's forward raised {type(e).__name__}: {msg}{advice}") from e


def select_output(out: Any, key: str | int | None = None) -> torch.Tensor:
    """The ``(N, classes)`` tensor of a model's output.

    Args:
        out: a tensor, a dict / ``ModelOutput`` (``logits`` by default), a tuple/list
            (its first tensor by default), or a detector's list of ``dict(boxes, labels,
            scores)`` (:func:`detection_class_scores`).
        key: the dict key or the tuple index to use instead.
    """
    if key is not None:
        try:
            chosen = out[key] if not isinstance(key, str) or not hasattr(out, key) else getattr(out, key)
        except (KeyError, IndexError, TypeError):
            keys = list(out.keys()) if hasattr(out, "keys") else f"indices 0..{len(out) - 1}"
            raise UsageError(f"the model's output has no {key!r}; it has: {keys}") from None
        if not isinstance(chosen, torch.Tensor):
            raise ModelError(f"the model's output {key!r} is a {type(chosen).__name__}, not a tensor")
        return chosen
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "keys"):
        if "logits" in out.keys():
            return out["logits"]
        tensors = [k for k in out.keys() if isinstance(out[k], torch.Tensor)]
        tensors.sort(key=lambda k: out[k].ndim != 2)  # an (N, classes) candidate first
        raise ModelError(
            f"the model returns a {type(out).__name__} without 'logits' (keys: {', '.join(map(str, out.keys()))}); "
            f"choose one with output=KEY (e.g. output={tensors[0]!r})"
            if tensors
            else f"the model returns a {type(out).__name__} without tensors"
        )
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if is_detections(out):
        return detection_class_scores(out)
    raise ModelError(f"the model returned {type(out).__name__}; expected a (N, classes) tensor")


def is_detections(out: Any) -> bool:
    """Whether ``out`` is a detector's output in torchvision's format: a non-empty list of
    ``dict(boxes, labels, scores)``, one per image."""
    return (
        isinstance(out, (list, tuple))
        and len(out) > 0
        and all(isinstance(d, dict) and isinstance(d.get("scores"), torch.Tensor) and "labels" in d for d in out)
    )


def detection_class_scores(dets: Any) -> torch.Tensor:
    """A detector's output as ``(N, classes)`` scores: each class's highest detection score
    in each image (0 where it has none; ``classes`` = the largest label + 1), inside the
    graph: explaining class ``c`` explains the image's best detection of ``c``."""
    k = 1 + max((int(d["labels"].max()) for d in dets if d["labels"].numel()), default=0)
    rows = []
    for d in dets:
        s = d["scores"].float()
        rows.append(s.new_zeros(k).scatter_reduce(0, d["labels"].long().to(s.device), s, "amax", include_self=True))
    return torch.stack(rows)


def check_scores(out: torch.Tensor) -> None:
    """The model gave ``(N, classes)`` scores with at least one class (no host sync)."""
    if out.ndim == 3:
        raise ModelError(
            f"the model's output has shape {tuple(out.shape)}, not (N, classes); for a YOLO-style detector "
            "((N, A, 4+1+K) or (N, 4+K, A)) give target=layerscope.targets.detections(k=1, format='yolo') "
            "or box(..., format='yolo')"
        )
    if out.ndim != 2:
        raise ModelError(f"the model's output has shape {tuple(out.shape)}; expected (N, classes)")
    if out.shape[1] == 0:
        raise ModelError("the model's output has 0 classes (shape (N, 0)); there is no class to explain")


def resolve_targets(out: torch.Tensor, target: Any) -> torch.Tensor:
    """The one target resolution: ``(N,)`` class indices as a tensor on the output's device.

    ``target`` is ``None`` (top-1 of each image, found on the device), one class index, one
    per image, or an already resolved index tensor. Checked on the host against the output's
    shape, which needs no synchronisation.
    """
    n, k = int(out.shape[0]), int(out.shape[1])
    if isinstance(target, torch.Tensor) and not target.is_floating_point() and target.dtype != torch.bool:
        if target.numel() == n and target.device == out.device:
            return target.reshape(n).long()
        target = target.detach().cpu().numpy()  # a caller's own tensor, given once
    t = given_targets(target, n, k)
    if t is None:
        return out.detach().argmax(dim=1)
    return torch.as_tensor(t, dtype=torch.long, device=out.device)


# --- layouts: token and channels-last outputs as (N, C, h, w) ------------------------------


def model_input(model: nn.Module, x: Any, device: torch.device, channels_last: bool) -> Any:
    """A private copy of the batch on the model's device in the model's dtype: a tensor, or
    for a tuple / dict batch (several inputs) a :class:`ModelInputs` of copies of its tensors
    (floating ones in the model's dtype; other values as they are)."""
    if isinstance(x, (tuple, dict)):
        dtype = model_dtype(model)

        def copy(t: torch.Tensor) -> torch.Tensor:
            c = t.detach().to(device=device, dtype=dtype if t.is_floating_point() else None, copy=True)
            return c.contiguous(memory_format=torch.channels_last) if channels_last and c.ndim == 4 else c

        given = ModelInputs(x, None) if isinstance(x, tuple) else ModelInputs((), x)
        return given.map(copy)
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.ndim == 3:
        x = x[None]
    dtype = model_dtype(model)
    xin = x.detach().to(device=device, dtype=dtype if x.is_floating_point() else None, copy=True)
    if channels_last and xin.ndim == 4:
        xin = xin.contiguous(memory_format=torch.channels_last)
    return xin


def custom_scores(target: Callable[[Any], Any], raw: Any, n: int) -> torch.Tensor:
    """A callable target's ``(N,)`` scores of the model's output, checked."""
    scores = target(raw)
    if not isinstance(scores, torch.Tensor) or scores.reshape(-1).shape[0] != n or scores.numel() != n:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise UsageError(f"the target callable returned {got}; it must return one score per image, shape ({n},)")
    return scores.reshape(n).float()
