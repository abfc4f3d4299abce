"""``explain(...)`` → :class:`Explanation`: capture → method → result. No math, no drawing."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.capture import CaptureRequest, adapter_for, check_supported, served_by
from layerscope.errors import UsageError, unknown_name
from layerscope.info import ModelInfo, info_for
from layerscope.inputs import display_from_tensor, is_tensor, prepare_batch
from layerscope.methods import Method, get_method
from layerscope.methods._ops import softmax
from layerscope.render import FrameText, RenderOptions, flat_mask
from layerscope.targets import described


@dataclass
class Explanation:
    """The maps of every chosen layer for a batch of images.

    Attributes:
        layers: layer names in forward order.
        cams: ``{layer: float32 (N, h, w)}``, the raw map after ReLU at the layer's own size.
        shapes: ``{layer: shape}``, the layer output's real per-image shape, in the
            framework's layout (``(C, h, w)`` for torch).
        targets: ``(N,)`` class explained per image.
        scores: ``(N,)`` the model output that was explained (logit, or probability for a
            model whose output is a probability).
        probabilities: ``(N,)`` the softmax probability of each target.
        flat: ``{layer: bool (N,)}``, maps that are flat (all zero after ReLU, say).
        images: the original RGB images (uint8 ``(H, W, 3)``) the maps are drawn over.
        blocked: ``{layer: why}`` for layers the explained score does not depend on, whose
            maps are flat for that reason (see :meth:`flat_reason`).
        target_kind: ``"class"``, or ``"text"`` / ``"image"``: prompts, references (:mod:`layerscope.targets`).
    """

    layers: list[str]
    cams: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    targets: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    flat: dict[str, np.ndarray]
    images: list[np.ndarray]
    method: str = "gradcam"
    class_names: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    info: ModelInfo = field(default_factory=ModelInfo)
    #: ``(N, classes)`` the model's whole output per image (the predicted class is its argmax).
    outputs: np.ndarray | None = None
    #: ``{layer: how its output became a map}`` for layers that are not ``(N, C, h, w)``
    #: feature maps, e.g. ``"tokens 197 → 14×14"`` for a vision transformer's block.
    grids: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    target_kind: str = "class"

    def class_name(self, index: int = 0) -> str:
        """The explained class of image ``index``, by name where the model has names."""
        t = int(self.targets[index])
        if self.class_names and 0 <= t < len(self.class_names):
            return self.class_names[t]
        return f"class {t}"

    def target_caption(self, index: int = 0) -> str:
        """What image ``index``'s maps explain, as captions say it (:func:`~layerscope.targets.described`)."""
        k = 1 if self.outputs is None else int(self.outputs.shape[1])
        return described(self.target_kind, self.class_name(index), self.probabilities[index], self.scores[index], k)

    def flat_reason(self, layer: str) -> str | None:
        """Why ``layer``'s maps are flat when layerscope knows (``None`` otherwise): the
        explained score does not depend on the layer's patch tokens (a CLS-token ViT's last
        block: the class token's score does not read them) or on its output at all."""
        why = self.blocked.get(layer)
        if why == "patch tokens":
            return "the class token's score does not depend on this block's patch tokens (their gradient is 0)"
        if why is not None:
            return "the explained score does not depend on this layer's output (its gradient is 0)"
        return None

    @property
    def class_agnostic(self) -> bool:
        """Whether the method ignores the class (Eigen-CAM, attention rollout: the maps come
        from the activations or attention weights alone, so they name no class)."""
        return get_method(self.method).class_agnostic

    @property
    def note(self) -> str | None:
        """The label drawn on every frame when the model is not what it may seem
        (``"RANDOM WEIGHTS"``, ``"demo model (10 synthetic shapes)"``), from the model info."""
        from layerscope.info import RANDOM_WEIGHTS

        if self.info.note:
            return self.info.note
        return "RANDOM WEIGHTS" if self.info.warning == RANDOM_WEIGHTS else None

    def __repr__(self) -> str:
        n = len(self.targets)
        parts = [f"{len(self.layers)} layer{'s' if len(self.layers) != 1 else ''}", self.method]
        parts.append(f"{n} image{'s' if n != 1 else ''}")
        shown = [f"{self.class_name(i)!r} p={float(self.probabilities[i]):.2f}" for i in range(min(n, 3))]
        more = ", …" if n > 3 else ""
        if self.class_agnostic:
            parts.append("class-agnostic, top-1 " + ", ".join(shown) + more)
        elif shown:
            parts.append(("class " if n == 1 else "classes ") + ", ".join(shown) + more)
        if self.note:
            parts.append(self.note)
        return f"Explanation({', '.join(parts)})"

    def _check_index(self, index: int) -> int:
        n = len(self.targets)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise UsageError(f"image index {index!r} is out of range for {n} image{'s' if n != 1 else ''}")
        return int(index)

    def _check_layer(self, layer: str) -> str:
        if layer not in self.cams:
            raise UsageError(unknown_name("layer", layer, self.layers, valid="the layers of this explanation"))
        return layer

    def caption(self, layer: str, index: int = 0, style: str = "layerscope") -> list[str]:
        """The caption lines of one frame.

        ``style="recipe"`` gives the notebook recipe's one line, ``Layer: <name>, Output size:
        <shape>``, with the layer output's real shape (the recipe printed ``None`` sizes).
        For a class-agnostic method (Eigen-CAM) the caption says so and names the model's
        top-1 class only as its prediction.
        """
        if style == "recipe":
            return [f"Layer: {layer}, Output size: {tuple(int(s) for s in self.shapes[layer])}"]
        if style != "layerscope":
            raise UsageError(f"unknown caption style {style!r}; expected 'layerscope' or 'recipe'")
        dims = tuple(int(s) for s in self.shapes[layer])
        shape = "x".join(str(s) for s in dims)
        grid = tuple(int(s) for s in np.shape(self.cams[layer])[1:])
        if self.grids.get(layer):
            shape += f" · {self.grids[layer]}"  # e.g. "tokens 197 → 14×14"
        elif len(dims) < 3 or grid not in (dims[-2:], dims[:2], dims[1:3]):
            shape += f" · {grid[0]}×{grid[1]} token grid"  # a transformer's tokens as a map
        method = get_method(self.method).title
        if self.options.get("guided_grads"):
            method += " (guided gradients)"
        p = self.probabilities[index]
        if self.class_agnostic:
            second = f"{method} · class-agnostic · top-1: {self.class_name(index)} (p = {p:.2f})"
        else:
            second = f"{self.target_caption(index)} · {method}"
        if self.flat[layer][index]:
            why = self.blocked.get(layer)
            second += (
                " · flat: score ignores its patch tokens"
                if why == "patch tokens"
                else " · flat: score ignores this layer"
                if why
                else " · flat map"
            )
        return [f"Layer: {layer} · output {shape}", second]

    def frame_texts(self, index: int = 0, options: RenderOptions | None = None) -> list[FrameText]:
        """What is written on each layer's frame: caption lines, the model's note, ``3/13``."""
        opts = RenderOptions.of(options)
        n = len(self.layers)
        return [
            FrameText(tuple(self.caption(name, index, opts.caption)), self.note, f"{k}/{n}")
            for k, name in enumerate(self.layers, 1)
        ]

    def iter_frames(self, index: int = 0, options: RenderOptions | None = None, **option_overrides: Any) -> Any:
        """The frames of image ``index``, one per layer, drawn one at a time (a generator of
        PIL images; see :func:`layerscope.render.render_frames`)."""
        from layerscope.render import render_frames

        opts = RenderOptions.of(options, **option_overrides)
        index = self._check_index(index)
        maps = [self.cams[name][index] for name in self.layers]
        return render_frames(self.images[index], maps, self.frame_texts(index, opts), opts)

    def frames(self, index: int = 0, options: RenderOptions | None = None, **option_overrides: Any) -> list[Any]:
        """One captioned overlay (a PIL image) per layer, for image ``index``.

        Args:
            index: which image.
            options: a :class:`~layerscope.render.options.RenderOptions`.
            **option_overrides: single options folded into ``options`` (``alpha=0.3``,
                ``caption="recipe"``, ``side_by_side=True`` …).
        """
        return list(self.iter_frames(index, options, **option_overrides))

    def save(
        self,
        path: str | Path,
        index: int | None = None,
        *,
        overwrite: bool = False,
        options: RenderOptions | None = None,
        **option_overrides: Any,
    ) -> Path | list[Path]:
        """Write the result; the writer is chosen by extension (:func:`layerscope.outputs.write`).

        ``.gif`` / ``.png`` (APNG) / ``.webp`` / ``.mp4``: the layer animation of an image;
        ``.html``: the interactive explorer of an image; ``.npz``: the raw maps of every image
        with a JSON manifest.

        Args:
            path: the file.
            index: the image to write; ``None``: every image — for a several-image
                explanation, one file per image, ``NAME_0.gif``, ``NAME_1.gif`` … (``.npz``
                holds them all in one file).
            overwrite: replace existing files.
            options: a :class:`~layerscope.render.options.RenderOptions`.
            **option_overrides: single options folded into ``options`` (``colormap=``,
                ``alpha=``, ``scale=``, ``caption=``, ``duration=`` …).

        Returns:
            The file written, or the list of files when one per image was written.
        """
        from layerscope import outputs

        opts = RenderOptions.of(options, **option_overrides)
        written = outputs.write(self, path, opts, index=index, overwrite=overwrite)
        return written[0] if len(written) == 1 else written

    def show(
        self,
        layer: str | None = None,
        index: int = 0,
        *,
        options: RenderOptions | None = None,
        ax: Any = None,
        **option_overrides: Any,
    ) -> Any:
        """Draw one layer's frame with matplotlib (default: the last layer); returns the axes."""
        import matplotlib.pyplot as plt

        from layerscope.render import layer_ranges, render_frames

        name = self._check_layer(layer if layer is not None else self.layers[-1])
        opts = RenderOptions.of(options, **option_overrides)
        index = self._check_index(index)
        k = self.layers.index(name)
        text = self.frame_texts(index, opts)[k]
        rng = layer_ranges([self.cams[n][index] for n in self.layers], opts.scale)[k]
        (img,) = render_frames(self.images[index], [self.cams[name][index]], [text], opts, [rng])
        if ax is None:
            _, ax = plt.subplots(figsize=(img.width / 100, img.height / 100), dpi=100)
        ax.imshow(img)
        ax.set_axis_off()
        return ax

    def _repr_html_(self) -> str:
        """Jupyter's view: the interactive explorer of the first image, inline (layer slider,
        ←/→, play, opacity, scale, hover values); see :func:`layerscope.outputs.explorer_fragment`."""
        from layerscope.outputs import explorer_fragment

        return explorer_fragment(self, 0)


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
            :func:`~layerscope.targets.similar_to` (an embedding's cosine to a reference).
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
    return Explanation(
        layers=result.layers,
        cams=result.cams,
        shapes=result.shapes,
        targets=result.targets,
        scores=(
            result.scores.astype(np.float32)
            if result.scores is not None
            else result.outputs[rows, result.targets].astype(np.float32)
        ),
        probabilities=_probabilities(result.outputs, result.targets, facts.output),
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
    )


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
