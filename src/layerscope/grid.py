"""One image, several methods or classes: :func:`grid` (the layers × methods grid image)
and :func:`explain_many` (one :class:`~layerscope.Explanation` per method and class, from
one capture for all the one-pass methods).

Glue only: :func:`layerscope.explain` (one call for all the one-pass methods, joined by
:func:`layerscope.methods.one_pass`, one per other method), then
:func:`layerscope.render.grid.draw_grid`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.render.options import RenderOptions

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam")


@contextlib.contextmanager
def _each_warning_once(seen: set[tuple[type, str]]) -> Iterator[None]:
    """Warnings raised inside are passed on once each over all the blocks that share ``seen``
    (one per method would repeat "the weights are RANDOM" three times)."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for w in caught:
            if (w.category, str(w.message)) not in seen:
                seen.add((w.category, str(w.message)))
                warnings.warn(str(w.message), w.category, stacklevel=4)


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
    device: str | None = None,
    precision: str = "default",
    output: str | int | None = None,
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
        framework, device, precision, output: as for :func:`layerscope.explain`.
        options: how to draw (:class:`~layerscope.render.options.RenderOptions`: ``colormap``,
            ``alpha``, ``scale`` — ``"layer"``, each cell on its own range, or ``"shared"``,
            one range per method — and ``cell``, the shorter side of a cell in pixels).
        **method_options: method options (e.g. ``top_k=16``, ``perturb_batch=64``), each given
            to every method that has it; an option no chosen method has is an error. A render
            option given here (``colormap=``, ``alpha=``, ``scale=``, ``cell=``) is folded into
            ``options``.

    Returns:
        A ``PIL.Image.Image``; save it with ``.save(path)`` or atomically with
        :func:`layerscope.outputs.write_image` (``.png``, ``.jpg``, ``.webp``).
    """
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
    exps = explain_many(  # the one-pass methods from one capture
        model,
        image,
        names,
        None if target is None else [target],
        layers=layers,
        preprocess=preprocess,
        framework=framework,
        info=info,
        device=device,
        precision=precision,
        output=output,
        **options_,
    )
    first = exps[0]
    maps = [[exp.cams[layer][0] for layer in first.layers] for exp in exps]
    title = f"Class: {first.class_name(0)} (p = {first.probabilities[0]:.2f})"
    img, _ = draw_grid(first.images[0], maps, [m.name for m in chosen], first.layers, title=title, options=opts)
    return img


def _take(exp: Any, i: int) -> Any:
    """Image ``i`` of an explanation as an explanation of its own."""
    from layerscope.explanation import Explanation

    return Explanation(
        layers=list(exp.layers),
        cams={k: v[i : i + 1] for k, v in exp.cams.items()},
        shapes=dict(exp.shapes),
        targets=exp.targets[i : i + 1],
        scores=exp.scores[i : i + 1],
        probabilities=exp.probabilities[i : i + 1],
        flat={k: v[i : i + 1] for k, v in exp.flat.items()},
        images=[exp.images[i]],
        method=exp.method,
        class_names=exp.class_names,
        options=dict(exp.options),
        info=exp.info,
        outputs=None if exp.outputs is None else exp.outputs[i : i + 1],
        grids=dict(exp.grids),
        blocked=dict(exp.blocked),
        target_kind=exp.target_kind,
        detections=None if exp.detections is None else exp.detections[i : i + 1],
    )


def explain_many(
    model: Any,
    image: Any,
    methods: str | Sequence[str] = ("gradcam",),
    targets: Sequence[int | str] | Any = None,
    *,
    top_k_classes: int | None = None,
    layers: str | Sequence[str] | None = None,
    **options: Any,
) -> list[Any]:
    """One image explained by several methods and/or for several classes: one
    :class:`~layerscope.Explanation` per (method, class), methods outermost — what the
    interactive explorer's method and class switches show.

    Every one-pass method (the gradient family and the activation methods, e.g. Grad-CAM,
    Grad-CAM++, Layer-CAM, XGrad-CAM, HiResCAM, Eigen-CAM) comes from **one** capture: each
    layer's activation and gradient go to all of them as the gradient arrives, so M such
    methods × L layers cost one forward and one backward pass (the perturbation and pixel
    methods run one capture each). Several classes share the capture too: the image is
    repeated once per class and each copy explains its own class, so K classes cost one
    forward and one backward pass of a batch of K.

    Args:
        model: as for :func:`layerscope.explain`.
        image: one image (path, PIL image, uint8 array or a ``(1, C, H, W)`` tensor).
        methods: method names, a list or a comma-separated string.
        targets: the classes to explain (indices or names); default: the top-1 class. Or
            a target of several prompts or reference images
            (:func:`layerscope.targets.text`, :func:`~layerscope.targets.similar_to`): one
            explanation per prompt, from one pass of the image repeated once per prompt.
        top_k_classes: explain the K most probable classes instead (not with ``targets``).
        layers: as for :func:`layerscope.explain`.
        **options: ``explain``'s keyword arguments (``preprocess``, ``framework``, ``info``,
            ``device``, ``precision``, ``output``, ``reshape``) and method options, each method option given to every
            method that has it; an option no chosen method has is an error.

    Returns:
        ``len(methods) × len(classes)`` explanations of one image each.
    """
    from layerscope.explanation import explain
    from layerscope.methods import get_method

    names = _method_list(methods)
    chosen = [get_method(n) for n in names]
    shared_keys = {"preprocess", "framework", "info", "device", "precision", "output", "reshape"}
    shared = {k: v for k, v in options.items() if k in shared_keys}
    method_options = {k: v for k, v in options.items() if k not in shared_keys}
    unused = set(method_options) - {k for m in chosen for k in m.options}
    if unused:
        raise UsageError(f"no chosen method has the option(s) {', '.join(sorted(unused))}")
    if targets is not None and top_k_classes is not None:
        raise UsageError("give the classes to explain or top_k_classes, not both")
    if top_k_classes is not None and top_k_classes < 1:
        raise UsageError(f"top_k_classes must be 1 or more, not {top_k_classes}")
    if callable(targets):  # several prompts or references: the image repeated, copy i explains prompt i
        if top_k_classes is not None:
            raise UsageError("give a text or similar_to target or top_k_classes, not both")
        return _explain_each(model, image, chosen, targets, layers, shared, method_options)

    def opts_of(m: Any) -> dict[str, Any]:
        return {k: v for k, v in method_options.items() if k in m.options}

    classes: list[int | str] | None = list(targets) if targets is not None else None
    by_method: dict[str, list[Any]] = {}
    seen: set[tuple[type, str]] = set()
    for group, method, opts in _passes(chosen, opts_of):
        with _each_warning_once(seen):
            exp = None
            if classes is None:
                exp = explain(model, image, layers, method, None, **shared, **opts)
                if len(exp.targets) != 1:
                    raise UsageError(f"explain_many explains one image, not {len(exp.targets)}")
                if top_k_classes is None:
                    classes = [int(exp.targets[0])]
                else:
                    if exp.outputs is None:
                        raise UsageError("top_k_classes needs the model's whole output")
                    k = min(top_k_classes, exp.outputs.shape[1])
                    classes = [int(c) for c in np.argsort(-exp.outputs[0], kind="stable")[:k]]
                    exp = exp if len(classes) == 1 else None
            if exp is None:
                exp = explain(model, _repeat(image, len(classes)), layers, method, list(classes), **shared, **opts)
        for m, part in zip(group, _split(exp, group, opts_of), strict=True):
            by_method[m.name] = [_take(part, i) for i in range(len(part.targets))]
    return [e for m in chosen for e in by_method[m.name]]


def _passes(chosen: Sequence[Any], opts_of: Any) -> list[tuple[list[Any], Any, dict[str, Any]]]:
    """``(methods, the method to explain with, its options)`` per capture: every one-pass
    method joined into one (:func:`layerscope.methods.one_pass`), each other method alone."""
    from layerscope.methods import ONE_PASS, one_pass

    joined = [m for m in chosen if m.needs <= ONE_PASS]
    groups = [joined] if len(joined) > 1 else []
    groups += [[m] for m in chosen if not (len(joined) > 1 and m in joined)]
    return [
        (g, g[0], opts_of(g[0])) if len(g) == 1 else (g, one_pass([(m, opts_of(m)) for m in g]), {}) for g in groups
    ]


def _split(exp: Any, group: Sequence[Any], opts_of: Any) -> list[Any]:
    """The explanations of each method of ``group`` from one joined capture
    (:func:`layerscope.methods.one_pass`: each layer's maps are ``(M·N, h, w)``, method by method)."""
    if len(group) == 1:
        return [exp]
    n = len(exp.targets)
    return [
        dataclasses.replace(
            exp,
            cams={k: v[i * n : (i + 1) * n] for k, v in exp.cams.items()},
            flat={k: v[i * n : (i + 1) * n] for k, v in exp.flat.items()},
            method=m.name,
            options={k: v for k, v in opts_of(m).items() if v != m.options.get(k)},
        )
        for i, m in enumerate(group)
    ]


def _explain_each(
    model: Any, image: Any, chosen: list[Any], target: Any, layers: Any, shared: dict[str, Any], options: Any
) -> list[Any]:
    """``explain_many`` for a target of ``K`` prompts or references: one capture for the
    one-pass methods together, one per other method."""
    from layerscope.explanation import explain

    k = len(getattr(target, "labels", ()) or ())
    if k == 0:
        raise UsageError(
            "explain_many takes a callable target that names its columns (text, similar_to, box, detections)"
        )
    seen: set[tuple[type, str]] = set()

    def opts_of(m: Any) -> dict[str, Any]:
        return {key: v for key, v in options.items() if key in m.options}

    by_method: dict[str, list[Any]] = {}
    for group, method, opts in _passes(chosen, opts_of):
        with _each_warning_once(seen):
            exp = explain(model, _repeat(image, k) if k > 1 else image, layers, method, target, **shared, **opts)
        if len(exp.targets) != k:
            raise UsageError(f"explain_many explains one image, not {len(exp.targets) // k}")
        for m, part in zip(group, _split(exp, group, opts_of), strict=True):
            each = [part] if k == 1 else [_take(part, i) for i in range(k)]
            if part.target_kind == "box" and part.detections is not None:  # detections(k): ranks the image has
                each = [e for e in each if e.detections[0].get("explained") is not None] or each[:1]
            by_method[m.name] = each
    return [e for m in chosen for e in by_method[m.name]]


def _repeat(image: Any, n: int) -> Any:
    """``n`` copies of one image, in the form ``explain`` takes."""
    if hasattr(image, "shape") and len(getattr(image, "shape", ())) == 4:  # a (1, C, H, W) tensor or array
        if int(image.shape[0]) != 1:
            raise UsageError(f"explain_many explains one image, not {int(image.shape[0])}")
        return (
            image.repeat(n, 1, 1, 1)
            if hasattr(image, "repeat") and not isinstance(image, np.ndarray)
            else (np.repeat(image, n, axis=0))
        )
    if isinstance(image, (list, tuple)):
        if len(image) != 1:
            raise UsageError(f"explain_many explains one image, not {len(image)}")
        image = image[0]
    from layerscope.inputs import as_rgb_array

    rgb = as_rgb_array(image)
    return [rgb] * n
