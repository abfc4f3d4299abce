"""Layer names of a torch model: every module's path, the friendly names of its
``ModelInfo``, and the default layers (every ``Conv2d``, or every transformer block)."""

from __future__ import annotations

from typing import Any

from torch import nn

from layerscope.capture._layers import match_layers
from layerscope.errors import ModelError
from layerscope.info import ModelInfo


def layer_names(model: nn.Module, info: ModelInfo | None = None) -> dict[str, str]:
    """Every addressable layer, name → module path: the info's friendly names first, then
    every module's own path."""
    names: dict[str, str] = dict(info.layers) if info is not None else {}
    for path, _ in model.named_modules():
        if path:
            names.setdefault(path, path)
    return names


def default_layers(model: nn.Module, info: ModelInfo | None = None) -> list[str]:
    """The default layers: the info's friendly names; else, for a vision transformer (its
    only convolutions are patch embeddings), each transformer block; else every ``Conv2d``,
    in module order."""
    if info is not None and info.layers:
        return list(info.layers)
    convs = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if all(m.kernel_size == m.stride and m.stride[0] > 1 for _, m in convs):
        blocks = transformer_blocks(model)
        if blocks:
            return blocks
    return [p for p, _ in convs]


def _has_attention(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in module.modules())


def transformer_blocks(model: nn.Module) -> list[str]:
    """The transformer blocks: items of a ``ModuleList``/``Sequential`` that hold an attention
    module, innermost first (Swin's blocks, not its stages), in module order."""
    found: list[str] = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)):
            for i, item in enumerate(m):
                if _has_attention(item):
                    found.append(f"{path}.{i}" if path else str(i))
    return [p for p in found if not any(q.startswith(p + ".") for q in found)]


def resolve_layers(model: nn.Module, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
    """``(display name, module path)`` pairs; see :func:`layerscope.capture.match_layers`."""
    default = default_layers(model, info)
    if spec is None and not default:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer or transformer block; name the layers to explain")
    names = layer_names(model, info)
    modules = dict(model.named_modules())
    missing = [p for p in names.values() if p not in modules]
    if missing:
        raise ModelError(f"the model info names module {missing[0]!r}, which {type(model).__name__} does not have")
    return match_layers(spec, names, default)
