"""Comparing methods: the layers × methods grid of one image.

Glue only: :func:`layerscope.explain` per method, then :func:`layerscope.render.grid.draw_grid`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from layerscope.errors import UsageError

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam")


def _method_list(methods: str | Sequence[str]) -> list[str]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    names = list(dict.fromkeys(methods))
    if not names:
        raise UsageError("no method given for the grid")
    return names


def grid(
    model: Any,
    image: Any,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    layers: str | Sequence[str] | None = None,
    target: int | str | None = None,
    *,
    preprocess: Any = None,
    framework: str | None = None,
    info: Any = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    scale: str = "layer",
    cell: int = 160,
    **options: Any,
) -> Any:
    """A grid image of one image's maps: rows = methods, columns = layers, labelled.

    Every method explains the same class: ``target``, or the first method's top-1 class.

    Args:
        model: a torch (or Keras) model, as for :func:`layerscope.explain`.
        image: one image (path, PIL image, uint8 array or a ``(1, C, H, W)`` tensor).
        methods: method names, a list or a comma-separated string.
        layers: as for :func:`layerscope.explain` (``None``: every conv layer).
        target: the class (index or name); default the top-1 prediction.
        preprocess: as for :func:`layerscope.explain`.
        framework: as for :func:`layerscope.explain`.
        colormap: any matplotlib colormap.
        alpha: heatmap opacity, 0..1.
        scale: ``"layer"`` (each cell on its own range) or ``"shared"`` (one range per method).
        cell: the shorter side of a cell, in pixels.
        **options: method options (e.g. ``top_k=16``, ``batch_size=64``), each given to every
            method that has it; an option no chosen method has is an error.

    Returns:
        A ``PIL.Image.Image``; save it with ``.save(path)`` or atomically with
        :func:`layerscope.outputs.write_with`.
    """
    from layerscope.explanation import explain
    from layerscope.methods import get_method
    from layerscope.render.grid import draw_grid

    names = _method_list(methods)
    chosen = [get_method(n) for n in names]
    unused = set(options) - {k for m in chosen for k in m.options}
    if unused:
        raise UsageError(f"no chosen method has the option(s) {', '.join(sorted(unused))}")
    exps = []
    seen: set[tuple[type, str]] = set()
    for m in chosen:
        opts = {k: v for k, v in options.items() if k in m.options}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exp = explain(
                model, image, layers, m.name, target, preprocess=preprocess, framework=framework, info=info, **opts
            )
        for w in caught:  # each warning once, not once per method
            if (w.category, str(w.message)) not in seen:
                seen.add((w.category, str(w.message)))
                warnings.warn(str(w.message), w.category, stacklevel=2)
        if len(exp.targets) != 1:
            raise UsageError(f"a grid shows one image, not {len(exp.targets)}")
        if target is None:
            target = int(exp.targets[0])  # the same class for every method
        exps.append(exp)
    first = exps[0]
    maps = [[exp.cams[layer][0] for layer in first.layers] for exp in exps]
    title = f"Class: {first.class_name(0)} (p = {first.probabilities[0]:.2f})"
    img, _ = draw_grid(
        first.images[0],
        maps,
        [m.name for m in chosen],
        first.layers,
        title=title,
        colormap=colormap,
        alpha=alpha,
        scale=scale,
        cell=cell,
    )
    return img
