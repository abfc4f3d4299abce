"""Where a torch model runs and the state it is left in: the device (``resolve_device``,
``placed``), and the flags a pass changes and restores (``eval_mode``, ``out_of_place``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from layerscope.errors import ModelError, UsageError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``spec``: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        UsageError: an unknown spelling, or a device this machine or this torch build lacks.
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {spec!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"device {spec!r} is not available: {why}; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"device {spec!r} is not available: this machine has {count} CUDA device(s)")
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"device {spec!r} is not available on this machine; use --device cpu (or auto)")
        return dev
    raise UsageError(f"unsupported device {spec!r}; expected auto, cpu, cuda, cuda:N or mps")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 for none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


@contextlib.contextmanager
def placed(model: nn.Module, device: torch.device | None) -> Iterator[torch.device]:
    """The model on ``device`` for the block (moved back afterwards); yields its device."""
    here = model_device(model)
    if here.type == "meta":
        raise ModelError(
            "the model's weights are on the 'meta' device (shapes only, no values): load its weights "
            "(model.to_empty(device='cpu') then load_state_dict) before explaining it"
        )
    if device is None or _same_device(here, device):
        yield here
        return
    try:
        model.to(device)
        yield device
    finally:
        model.to(here)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.index is None or b.index is None


# --- the model's state ------------------------------------------------------------------------


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
