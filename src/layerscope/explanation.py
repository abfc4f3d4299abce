"""``explain(...)`` → :class:`Explanation`: capture → method → result. No math, no drawing."""

from __future__ import annotations

import difflib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.capture import CaptureRequest, detect_framework, get_adapter
from layerscope.errors import UsageError
from layerscope.info import ModelInfo, info_for
from layerscope.inputs import prepare_batch
from layerscope.methods import check_framework, get_method
from layerscope.methods._ops import softmax
from layerscope.render import FLAT_EPS


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

    def class_name(self, index: int = 0) -> str:
        """The explained class of image ``index``, by name where the model has names."""
        t = int(self.targets[index])
        if self.class_names and 0 <= t < len(self.class_names):
            return self.class_names[t]
        return f"class {t}"

    def caption(self, layer: str, index: int = 0, style: str = "layerscope") -> list[str]:
        """The caption lines of one frame.

        ``style="recipe"`` gives the notebook recipe's one line, ``Layer: <name>, Output size:
        <shape>``, with the layer output's real shape (the recipe printed ``None`` sizes).
        """
        if style == "recipe":
            return [f"Layer: {layer}, Output size: {tuple(int(s) for s in self.shapes[layer])}"]
        if style != "layerscope":
            raise UsageError(f"unknown caption style {style!r}; expected 'layerscope' or 'recipe'")
        shape = "x".join(str(s) for s in self.shapes[layer])
        method = get_method(self.method).title
        if self.options.get("guided_grads"):
            method += " (guided gradients)"
        second = f"Class: {self.class_name(index)} (p = {self.probabilities[index]:.2f}) · {method}"
        if self.flat[layer][index]:
            second += " · flat map"
        return [f"Layer: {layer} · output {shape}", second]

    def frames(
        self,
        index: int = 0,
        colormap: str = "jet",
        alpha: float = 0.5,
        scale: str = "layer",
        caption: str = "layerscope",
    ) -> list[Any]:
        """One captioned overlay (a PIL image) per layer, for image ``index``; ``caption`` is
        the caption style (``"layerscope"`` or ``"recipe"``, see :meth:`caption`)."""
        from layerscope.render import overlay_frames

        if not 0 <= index < len(self.targets):
            raise UsageError(f"image index {index} is out of range for {len(self.targets)} images")
        maps = [self.cams[name][index] for name in self.layers]
        captions = [self.caption(name, index, caption) for name in self.layers]
        frames, _ = overlay_frames(self.images[index], maps, captions, colormap, alpha, scale)
        return frames

    def save(
        self,
        path: str | Path,
        index: int = 0,
        *,
        overwrite: bool = False,
        duration: int = 500,
        colormap: str = "jet",
        alpha: float = 0.5,
        scale: str = "layer",
        caption: str = "layerscope",
    ) -> Path:
        """Write the result; the writer is chosen by extension.

        ``.gif`` / ``.webp`` / ``.png``: the layer animation of image ``index`` (``caption``:
        ``"layerscope"`` or the notebook recipe's ``"recipe"`` style);
        ``.npz``: the raw maps of every image (``cam/<layer>``) with targets and scores.
        """
        from layerscope import outputs

        p = Path(path)
        if p.suffix.lower() == ".npz":
            arrays = {f"cam/{name}": self.cams[name] for name in self.layers}
            arrays.update(
                layers=np.asarray(self.layers),
                targets=self.targets,
                scores=self.scores,
                probabilities=self.probabilities,
            )
            return outputs.write_npz(p, arrays, overwrite)
        outputs.check_writable(p, overwrite)
        frames = self.frames(index, colormap, alpha, scale, caption)
        return outputs.write_animation(p, frames, duration, overwrite)

    def _repr_html_(self) -> str:
        import base64

        from layerscope.outputs import write_gif

        buf = io.BytesIO()
        write_gif(buf, self.frames(0))
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<img src="data:image/gif;base64,{data}" alt="layerscope: {self.method}"/>'


def resolve_target(target: Any, class_names: Sequence[str] | None) -> Any:
    """Class names become indices; ``None`` and integers pass through."""
    if target is None:
        return None
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
                close = difflib.get_close_matches(t, class_names, n=4, cutoff=0.6)
                hint = f"; close matches: {', '.join(close)}" if close else ""
                raise UsageError(f"unknown class {t!r}{hint}")
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


def explain(
    model: Any,
    images: Any,
    layers: str | Sequence[str] | None = None,
    method: str = "gradcam",
    target: int | str | Sequence[int | str] | None = None,
    *,
    preprocess: Any = None,
    framework: str | None = None,
    info: ModelInfo | None = None,
    device: str | None = None,
    precision: str = "default",
    **method_options: Any,
) -> Explanation:
    """Class-activation maps of every chosen layer, from one forward and one backward pass.

    Args:
        model: a ``torch.nn.Module`` (or a ``keras.Model``) returning ``(N, classes)``.
        images: a path, PIL image or uint8 array, a list of them, or an already
            preprocessed tensor ``(N, C, H, W)``.
        layers: ``None`` (every conv layer, or a built-in model's friendly names), a name,
            a glob pattern, or a list of them.
        method: a name from :func:`layerscope.list_methods`.
        target: ``None`` (top-1), a class index or name, or one per image.
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
            maps) or ``"fast"`` (float16 autocast on CUDA, bfloat16 on the CPU, channels-last;
            the CAM math in float32).
        **method_options: the method's options, e.g. ``guided_grads=True`` for ``gradcam``.

    Returns:
        An :class:`Explanation`.
    """
    m = get_method(method)
    unknown = set(method_options) - set(m.options)
    if unknown:
        valid = ", ".join(m.options) or "none"
        raise UsageError(f"method {method!r} has no option {', '.join(sorted(unknown))}; its options: {valid}")
    opts = {**m.options, **method_options}
    fw = framework or detect_framework(model)
    check_framework(m, fw)
    facts = info_for(model, info)
    class_names = facts.class_names
    adapter = get_adapter(fw)
    resolved = adapter.resolve_layers(model, layers, facts)
    x, originals = prepare_batch(images, preprocess if preprocess is not None else facts.preprocessor())
    forward_passes = m.forward_passes
    request = CaptureRequest(
        fn=lambda a, g, **context: m.fn(a, g, **context, **opts),
        needs=m.needs,
        layer_gradients=m.needs_gradients,
        output=facts.output,
        forward_passes=(lambda n, c: forward_passes(n, c, **opts)) if forward_passes is not None else None,
        label=method,
        device=device,
        precision=precision,
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
    rows = np.arange(len(result.targets))
    flat = {name: np.ptp(result.cams[name].reshape(len(rows), -1), axis=1) <= FLAT_EPS for name in result.layers}
    return Explanation(
        layers=result.layers,
        cams=result.cams,
        shapes=result.shapes,
        targets=result.targets,
        scores=result.outputs[rows, result.targets].astype(np.float32),
        probabilities=_probabilities(result.outputs, result.targets, facts.output),
        flat=flat,
        images=originals,
        method=method,
        class_names=list(class_names) if class_names else None,
        options={k: v for k, v in opts.items() if v != m.options.get(k)},
        info=facts,
        outputs=np.asarray(result.outputs, dtype=np.float32),
    )
