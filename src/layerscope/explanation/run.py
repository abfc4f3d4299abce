"""``explain(...)`` → :class:`~layerscope.explanation.Explanation`: capture → method →
result. No math, no drawing."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from layerscope.capture import CaptureRequest, adapter_for, check_supported, served_by
from layerscope.errors import UsageError, unknown_name
from layerscope.explanation.result import Explanation
from layerscope.info import ModelInfo, info_for
from layerscope.inputs import display_from_tensor, is_tensor, prepare_batch
from layerscope.methods import Method, get_fusion, get_method
from layerscope.methods._ops import softmax
from layerscope.render import flat_mask


def resolve_target(target: Any, class_names: Sequence[str] | None) -> Any:
    """Class names become indices; ``None`` and integers pass through."""
    if target is None or callable(target):
        return target  # a callable scores the model's output itself (gradient methods, torch)
    items = [target] if isinstance(target, (str, bytes)) or np.ndim(target) == 0 else list(target)
    out = []
    for t in items:
        if isinstance(t, str) and not t.lstrip("-").isdigit():
            if not class_names:
                raise UsageError(f"class {t!r} given by name, but the model has no class names")
            if t not in class_names:
                lower = {c.lower(): i for i, c in enumerate(class_names)}
                if t.lower() in lower:
                    out.append(lower[t.lower()])
                    continue
                raise UsageError(unknown_name("class", t, class_names, cutoff=0.6, valid=""))
            out.append(list(class_names).index(t))
        else:
            out.append(t)  # checked by the adapter: a whole number in range, never a bool
    return out[0] if len(out) == 1 and not isinstance(target, (list, tuple, np.ndarray)) else out


def _probabilities(outputs: np.ndarray, targets: np.ndarray, kind: str | None) -> np.ndarray:
    rows = np.arange(len(targets))
    looks_like_probs = bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4))
    if kind == "probabilities" or (kind is None and looks_like_probs):
        return outputs[rows, targets].astype(np.float32)
    return softmax(outputs, axis=1)[rows, targets].astype(np.float32)


def _several_inputs(images: Any) -> bool:
    """Whether ``images`` is several model inputs: a tuple or dict with at least one
    framework tensor among its values (a list, or a tuple of paths / pictures / numpy arrays,
    is several images)."""
    if isinstance(images, dict):
        values = list(images.values())
    elif isinstance(images, tuple):
        values = list(images)
    else:
        return False
    return any(is_tensor(v) and not isinstance(v, np.ndarray) for v in values)


def _display_tensor(inputs: tuple[Any, ...] | dict[str, Any]) -> Any:
    """The first 4-D floating tensor of several inputs: the pictures the maps are drawn over."""
    values = inputs.values() if isinstance(inputs, dict) else inputs
    for v in values:
        if is_tensor(v) and not isinstance(v, np.ndarray) and len(v.shape) == 4 and "float" in str(v.dtype):
            return v
    raise UsageError(
        "several model inputs need a 4-D floating tensor (N, C, H, W) among them: the picture the maps are drawn over"
    )


def explain(
    model: Any,
    images: Any,
    layers: str | Sequence[str] | None = None,
    method: str | Method = "gradcam",
    target: int | str | Sequence[int | str] | None = None,
    *,
    preprocess: Any = None,
    framework: str | None = None,
    info: ModelInfo | None = None,
    device: str | None = None,
    precision: str = "default",
    output: str | int | None = None,
    reshape: Any = None,
    fuse: str | None = None,
    **method_options: Any,
) -> Explanation:
    """Class-activation maps of every chosen layer, from one forward and one backward pass.

    Args:
        model: a ``torch.nn.Module`` (or a ``keras.Model``) returning ``(N, classes)``.
        images: a path, PIL image or uint8 array, a list of them, or an already
            preprocessed tensor ``(N, C, H, W)``. Several model inputs (PyTorch, one-pass
            methods): a tuple of tensors is passed as ``model(*images)``, a dict as
            ``model(**images)``; tensors go to the model's device (floating ones as copies in
            the model's dtype), other values pass unchanged, and the maps are drawn over the
            first 4-D floating tensor. The rule: only a tuple or dict with a tensor among its
            values is several inputs; a list is always several images.
        layers: ``None`` (every conv layer, or a built-in model's friendly names), a name,
            a glob pattern, or a list of them.
        method: a name from :func:`layerscope.list_methods` (or a
            :class:`~layerscope.methods.Method`).
        target: ``None`` (top-1), a class index or name, or one per image; or (PyTorch,
            gradient methods) a callable ``(model_output) -> (N,)`` scores of any kind, whose
            sum is explained (``targets`` then holds the top-1 class, ``scores`` its values);
            :func:`layerscope.targets.region` ``(c, mask)`` for a segmentation model;
            :func:`~layerscope.targets.text` (a CLIP prompt) or
            :func:`~layerscope.targets.similar_to` (an embedding's cosine to a reference);
            :func:`~layerscope.targets.box` / :func:`~layerscope.targets.detections` for a
            detector (torchvision-style or YOLO-style outputs; see the "Detectors" page).
        preprocess: a :class:`~layerscope.inputs.Preprocess` or a callable from a list of
            uint8 RGB arrays to the model input; default: the model info's, else
            ImageNet normalisation at 224×224.
        framework: ``"torch"`` or ``"keras"``; detected when not given.
        info: a :class:`~layerscope.info.ModelInfo` with the model's facts (friendly layer
            names, class names, preprocessing, output kind); default: the one a built-in
            model was loaded with, else a plain one.
        device: where to run a torch model: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"``, ``"mps"``; ``None``: where the model is. A model elsewhere
            is moved there for the call and back afterwards (move it yourself for many calls).
        precision: ``"default"`` (the framework's settings: TF32 on CUDA unless turned off),
            ``"highest"`` (TF32 off for the pass, flags restored: GPU maps agree with CPU
            maps) or ``"fast"`` (float16 autocast on CUDA/MPS and channels-last inputs; on the
            CPU channels-last only; the CAM math in float32).
        output: for a model returning a dict, tuple or ``ModelOutput``: the key or index of
            its ``(N, classes)`` scores (default: ``logits``, else the first tensor).
        reshape: a callable from a chosen layer's output to an ``(N, C, h, w)`` tensor, for a
            layout layerscope cannot infer (token ``(N, T, C)`` outputs of ViT/DeiT/Swin and
            channels-last ``(N, h, w, C)`` outputs are laid out automatically).
        fuse: a fusion across layers (:func:`layerscope.methods.list_fusions`:
            ``"layercam-fusion"``, ``"refinecam"``, ``"polycam"``) computed from the maps with
            its default options, at no extra pass: ``Explanation.fusion``, drawn as a last frame
            "fused" (see :meth:`Explanation.fused` for options).
        **method_options: the method's options, e.g. ``guided_grads=True`` for ``gradcam``.

    Returns:
        An :class:`Explanation`.
    """
    m = method if isinstance(method, Method) else get_method(method)
    method = m.name
    unknown = set(method_options) - set(m.options)
    if unknown:
        valid = ", ".join(m.options) or "none"
        raise UsageError(f"method {method!r} has no option {', '.join(sorted(unknown))}; its options: {valid}")
    opts = {**m.options, **method_options}
    adapter = adapter_for(model, framework)
    check_supported(m, adapter.name)
    facts = info_for(model, info)
    class_names = facts.class_names
    resolved = adapter.resolve_layers(model, layers, facts)
    if fuse is not None:
        get_fusion(fuse)  # an unknown name fails before the pass
        if len(resolved) < 2:
            raise UsageError(f"fusion {fuse!r} needs the maps of at least 2 layers; {len(resolved)} chosen")
    prep = preprocess if preprocess is not None else facts.preprocessor()
    if _several_inputs(images):
        if not adapter.supports.several_inputs:
            raise UsageError(
                "several model inputs (a tuple or dict of tensors) are for "
                f"{served_by(lambda s: s.several_inputs)} models"
            )
        x, originals = images, [display_from_tensor(a, prep) for a in _display_tensor(images)]
    else:
        x, originals = prepare_batch(_image_tensor_as_pictures(images), prep)
    forward_passes = m.forward_passes
    method_score = m.score
    request = CaptureRequest(
        fn=lambda a, g, **context: m.fn(a, g, **context, **opts),
        needs=m.needs,
        output=facts.output,
        forward_passes=(lambda n, c: forward_passes(n, c, **opts)) if forward_passes is not None else None,
        label=method,
        device=device,
        precision=precision,
        output_key=output,
        reshape=reshape,
        size_hint=_size_hint(facts),
        score=(lambda out, t: method_score(out, t, **opts)) if method_score is not None else None,
    )
    result = adapter.run(model, x, resolved, resolve_target(target, class_names), request)
    if facts.warning:
        warnings.warn(facts.warning, stacklevel=2)
    if result.nonfinite:
        warnings.warn(
            f"NaN or inf in the maps of {', '.join(result.nonfinite)} (non-finite activations "
            "or gradients); those values were set to 0",
            stacklevel=2,
        )
    _warn_blocked(result.blocked)
    rows = np.arange(len(result.targets))
    labels = getattr(target, "labels", None) if callable(target) else None  # a prompt's, a reference's
    flat = {name: flat_mask(result.cams[name]) for name in result.layers}
    exp = Explanation(
        layers=result.layers,
        cams=result.cams,
        shapes=result.shapes,
        targets=result.targets,
        scores=(
            result.scores.astype(np.float32)
            if result.scores is not None
            else result.outputs[rows, result.targets].astype(np.float32)
        ),
        probabilities=_probabilities(result.outputs, result.targets, _output_kind(target, result, facts)),
        flat=flat,
        images=originals,
        method=method,
        class_names=list(labels or class_names or ()) or None,
        options={k: v for k, v in opts.items() if v != m.options.get(k)},
        info=facts,
        outputs=np.asarray(result.outputs, dtype=np.float32),
        grids=dict(result.grids),
        blocked=dict(result.blocked),
        target_kind=str(getattr(target, "kind", "class")) if labels else "class",
        detections=getattr(result, "detections", None),
    )
    if fuse is not None:
        exp.fused(fuse)
    return exp


def _output_kind(target: Any, result: Any, info: ModelInfo) -> str | None:
    """What the output's numbers are: a box target's confidences and a detector's per-label
    scores are probabilities; otherwise the model info says (``None``: guessed)."""
    kind = getattr(target, "output_kind", None) if callable(target) else None
    if kind is None and getattr(result, "detections", None) is not None:
        kind = "probabilities"
    return kind or info.output


def _size_hint(info: ModelInfo) -> str | None:
    """``ModelInfo.size_hint()``: what to say when the model rejects the input's size."""
    hint = getattr(info, "size_hint", None)
    return hint() if callable(hint) else hint


def _warn_blocked(blocked: dict[str, str]) -> None:
    """One warning per reason for layers whose maps are flat because the explained score
    does not depend on them, saying why (not just "flat")."""
    tokens = [n for n, why in blocked.items() if why == "patch tokens"]
    others = [n for n in blocked if n not in tokens]
    if tokens:
        whose = "that block's" if len(tokens) == 1 else "those blocks'"
        warnings.warn(
            f"the maps of {', '.join(tokens)} are flat because the class token's score does not depend on "
            f"{whose} patch tokens (after the last block nothing mixes them back into the class token, so "
            "their gradient is 0); explain the block's attention input (its first LayerNorm, the default "
            "layers) or an earlier block",
            stacklevel=3,
        )
    if others:
        whose = "that layer's" if len(others) == 1 else "those layers'"
        warnings.warn(
            f"the maps of {', '.join(others)} are flat because the explained score does not depend on {whose} "
            "output (the gradient is 0)",
            stacklevel=3,
        )


def _image_tensor_as_pictures(images: Any) -> Any:
    """A framework tensor that is not floating point: ``uint8`` (what torchvision's
    ``read_image`` gives, ``(C, H, W)`` or ``(N, C, H, W)``, or channels-last) becomes uint8
    pictures, preprocessed as images are (scaled to [0, 1], then the model's preprocessing);
    any other integer, bool or complex tensor is refused naming its dtype."""
    if not is_tensor(images) or isinstance(images, np.ndarray):
        return images
    dtype = str(images.dtype).replace("torch.", "").replace("<dtype: '", "").replace("'>", "")
    if "float" in dtype:
        return images
    if dtype != "uint8":
        raise UsageError(
            f"explain got a {dtype} tensor; give a floating-point tensor (the preprocessed input), a uint8 "
            "image tensor (preprocessed like an image), or images (paths, PIL images, uint8 arrays)"
        )
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise UsageError(f"a uint8 image tensor must be (C, H, W) or (N, C, H, W), not {tuple(arr.shape)}")
    if arr.shape[1] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)  # channels first, as read_image gives
    return [a[..., 0] if a.shape[-1] == 1 else np.ascontiguousarray(a) for a in arr]
