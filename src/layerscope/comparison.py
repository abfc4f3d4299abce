"""Comparing methods: the layers × methods grid of one image.

Glue only: :func:`layerscope.explain` per method, then :func:`layerscope.render.grid.draw_grid`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

from layerscope.errors import UsageError
from layerscope.render.options import RenderOptions

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
    options: RenderOptions | None = None,
    **method_options: Any,
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
        options: how to draw (:class:`~layerscope.render.options.RenderOptions`: ``colormap``,
            ``alpha``, ``scale`` — ``"layer"``, each cell on its own range, or ``"shared"``,
            one range per method — and ``cell``, the shorter side of a cell in pixels).
        **method_options: method options (e.g. ``top_k=16``, ``batch_size=64``), each given
            to every method that has it; an option no chosen method has is an error. A render
            option given here (``colormap=``, ``alpha=``, ``scale=``, ``cell=``) is folded into
            ``options``.

    Returns:
        A ``PIL.Image.Image``; save it with ``.save(path)`` or atomically with
        :func:`layerscope.outputs.write_image` (``.png``, ``.jpg``, ``.webp``).
    """
    from layerscope.explanation import explain
    from layerscope.methods import get_method
    from layerscope.render.grid import draw_grid

    render_keys = {f.name for f in dataclasses.fields(RenderOptions)}
    opts = RenderOptions.of(options, **{k: v for k, v in method_options.items() if k in render_keys})
    options_ = {k: v for k, v in method_options.items() if k not in render_keys}
    names = _method_list(methods)
    chosen = [get_method(n) for n in names]
    unused = set(options_) - {k for m in chosen for k in m.options}
    if unused:
        raise UsageError(f"no chosen method has the option(s) {', '.join(sorted(unused))}")
    exps = []
    seen: set[tuple[type, str]] = set()
    for m in chosen:
        m_opts = {k: v for k, v in options_.items() if k in m.options}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exp = explain(
                model, image, layers, m.name, target, preprocess=preprocess, framework=framework, info=info, **m_opts
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
    img, _ = draw_grid(first.images[0], maps, [m.name for m in chosen], first.layers, title=title, options=opts)
    return img
