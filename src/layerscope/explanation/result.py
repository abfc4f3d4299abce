"""The :class:`Explanation`: the maps of every chosen layer for a batch of images, and how
they are captioned, drawn, saved and shown. No capture, no math."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError, unknown_name
from layerscope.info import ModelInfo
from layerscope.methods import get_method
from layerscope.render import FrameText, RenderOptions
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
    #: Each image's best layer (``None``: none), marked ★ in its captions and on the explorer
    #: page; set by :meth:`layerscope.evaluate.LayerRanking.mark`.
    best_layers: list[str | None] | None = None
    #: What the best layers were chosen by (``"ROAD combined"``), said in the caption.
    best_by: str = ""

    def is_best(self, layer: str, index: int = 0) -> bool:
        """Whether ``layer`` is image ``index``'s best layer (see :attr:`best_layers`)."""
        return bool(self.best_layers) and 0 <= index < len(self.best_layers) and self.best_layers[index] == layer

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
        top-1 class only as its prediction. The image's best layer (:attr:`best_layers`) is
        marked ★.
        """
        star = self.is_best(layer, index)
        if style == "recipe":
            size = tuple(int(s) for s in self.shapes[layer])
            return [f"Layer: {layer}, Output size: {size}" + (" ★" if star else "")]
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
        first = f"Layer: {layer} · output {shape}"
        if star:
            first += " · ★ best" + (f" by {self.best_by}" if self.best_by else "")
        return [first, second]

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
