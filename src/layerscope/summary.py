"""Layer listings: each layer's name, module and real output shape for an input size."""

from __future__ import annotations

from typing import Any


def layer_shapes(
    model: Any, size: tuple[int, int] | None = None, every_module: bool = False
) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, module path, per-image output shape)`` in forward order, from one forward
    pass of a zero image (no gradients).

    Args:
        model: a torch model.
        size: ``(height, width)``; default the model's ``layerscope_preprocess`` size or 224.
        every_module: list every leaf module, not only the default (conv) layers.
    """
    import torch
    from torch import nn

    from layerscope.capture.torch import conv_layers, eval_mode, layer_names, model_device

    if size is None:
        size = tuple((getattr(model, "layerscope_preprocess", None) or {}).get("size", (224, 224)))
    names = layer_names(model)
    if every_module:
        chosen = [(p, p) for p, m in model.named_modules() if p and not list(m.children())]
    else:
        chosen = [(n, names[n]) for n in conv_layers(model)]
    modules = dict(model.named_modules())
    seen: list[tuple[str, str, tuple[int, ...]]] = []
    handles = []

    def make(name: str, path: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and all(name != s[0] for s in seen):
                seen.append((name, path, tuple(int(d) for d in output.shape[1:])))

        return hook

    try:
        for name, path in chosen:
            handles.append(modules[path].register_forward_hook(make(name, path)))
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, *size, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return seen


def layer_table(model: Any, size: tuple[int, int] | None = None, every_module: bool = False) -> list[str]:
    """Printable rows of :func:`layer_shapes`."""
    rows = layer_shapes(model, size, every_module)
    w = max([len(r[0]) for r in rows] + [5])
    pw = max([len(r[1]) for r in rows] + [6])
    out = [f"{'layer':{w}s}  {'module':{pw}s}  output"]
    out += [f"{n:{w}s}  {p:{pw}s}  {'x'.join(map(str, s))}" for n, p, s in rows]
    return out
