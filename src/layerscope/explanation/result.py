"""The :class:`Explanation`: the maps of every chosen layer for a batch of images, and how
they are captioned, drawn, saved and shown. No capture, no math."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError, unknown_name
from layerscope.info import ModelInfo
from layerscope.methods import get_fusion, get_method
from layerscope.render import DrawnBox, FrameText, RenderOptions, flat_mask, layer_ranges, map_range
from layerscope.targets import described
from layerscope.targets._detections import box_text

#: The most other detections drawn (thin) on a frame, highest score first.
MAX_DRAWN = 20


@dataclass(frozen=True)
class FusedMap:
    """A map fused from several layers' maps (:meth:`Explanation.fused`).

    Attributes:
        method: the fusion's registry name (:func:`layerscope.methods.list_fusions`).
        layers: the layers whose maps it used, in forward order.
        map: float32 ``(N, H, W)``.
        flat: bool ``(N,)``, fused maps that are flat.
        options: the fusion's options that differ from their defaults.
    """

    method: str
    layers: tuple[str, ...]
    map: np.ndarray
    flat: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """``Fused: LayerCAM fusion of 13 layers``: the first caption line of its frame."""
        n = len(self.layers)
        return f"Fused: {get_fusion(self.method).title} of {n} layer{'s' if n != 1 else ''}"


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
        target_kind: ``"class"``, or ``"text"`` / ``"image"`` / ``"box"``: prompts,
            references, detected boxes (:mod:`layerscope.targets`).
        detections: for a detector, per image ``{"boxes" (M, 4), "labels", "scores", "size"
            (the input's (H, W), the boxes' pixels), "explained"}``, ``explained`` being
            ``{"box", "label", "score", "matched"}`` for a box target (else ``None``); drawn
            on every frame (the explained box thick, the others thin).
        fusion: the map fused across layers (:meth:`fused`), drawn as one more, last frame
            (and the ``fused`` array of a ``.npz``); ``None``: none.
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
    fusion: FusedMap | None = None
    detections: list[dict[str, Any]] | None = None
    #: Each image's best layer (``None``: none), marked ★ in its captions and on the explorer
    #: page; set by :meth:`layerscope.evaluate.LayerRanking.mark`.
    best_layers: list[str | None] | None = None
    #: What the best layers were chosen by (``"ROAD combined"``), said in the caption.
    best_by: str = ""

    def is_best(self, layer: str, index: int = 0) -> bool:
        """Whether ``layer`` is image ``index``'s best layer (see :attr:`best_layers`)."""
        return bool(self.best_layers) and 0 <= index < len(self.best_layers) and self.best_layers[index] == layer

    def class_name(self, index: int = 0) -> str:
        """The explained class of image ``index``, by name where the model has names (for a
        box target: the box and its label, ``(12,8,40,52) cat``)."""
        if self.target_kind == "box" and self.detections is not None:
            return explained_text(self.detections[index].get("explained"), self.info.class_names)
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
        elif shown and self.target_kind == "box":
            parts.append(("box " if n == 1 else "boxes ") + ", ".join(shown) + more)
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
        second = self._explained_line(index)
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

    @property
    def n_frames(self) -> int:
        """How many frames an image's animation has: one per layer, and the fused map's."""
        return len(self.layers) + (self.fusion is not None)

    def _explained_line(self, index: int) -> str:
        """The caption's second line: what is explained, by which method."""
        method = get_method(self.method).title
        if self.options.get("guided_grads"):
            method += " (guided gradients)"
        p = self.probabilities[index]
        if self.class_agnostic:
            return f"{method} · class-agnostic · top-1: {self.class_name(index)} (p = {p:.2f})"
        return f"{self.target_caption(index)} · {method}"

    def frame_texts(self, index: int = 0, options: RenderOptions | None = None) -> list[FrameText]:
        """What is written on each layer's frame: caption lines, the model's note, ``3/13``."""
        opts = RenderOptions.of(options)
        n = self.n_frames
        texts = [
            FrameText(tuple(self.caption(name, index, opts.caption)), self.note, f"{k}/{n}")
            for k, name in enumerate(self.layers, 1)
        ]
        if self.fusion is not None:
            texts.append(FrameText(tuple(self.fused_caption(index, opts.caption)), self.note, f"{n}/{n}"))
        return texts

    def fused(
        self,
        method: str = "layercam-fusion",
        layers: Sequence[str] | None = None,
        *,
        size: tuple[int, int] | None = None,
        keep: bool = True,
        **options: Any,
    ) -> np.ndarray:
        """One map fused from several layers' maps already captured: no pass of the model.

        Args:
            method: a fusion from :func:`layerscope.methods.list_fusions`:
                ``"layercam-fusion"`` (LayerCAM's tanh-scaled maximum), ``"refinecam"``
                (product of the normalised maps), ``"polycam"`` (Poly-CAM's recursive
                upsampling, the deepest layer of each size).
            layers: the layers to fuse (default: all of this explanation's), at least 2.
            size: the fused map's ``(H, W)`` (default: the largest map's height and width).
            keep: keep the result as :attr:`fusion`, so that frames, files and pages get a
                last frame "fused".
            **options: the fusion's options (``gamma=`` for ``layercam-fusion``,
                ``outlier=`` for ``polycam``).

        Returns:
            float32 ``(N, H, W)``.
        """
        from layerscope.methods.fusion import fuse

        f = get_fusion(method)
        names = list(self.layers) if layers is None else [self._check_layer(n) for n in layers]
        names = [n for n in self.layers if n in set(names)]  # forward order, once each
        maps = [np.asarray(self.cams[n]) for n in names]
        out = fuse(method, maps, size, **options)
        if keep:
            used = [names[i] for i in f.chosen([tuple(m.shape[-2:]) for m in maps])]
            opts = {k: v for k, v in options.items() if v != f.options.get(k)}
            self.fusion = FusedMap(method, tuple(used), out, flat_mask(out), opts)
        return out

    def fused_caption(self, index: int = 0, style: str = "layerscope") -> list[str]:
        """The caption lines of the fused frame (:attr:`fusion`): ``Fused: LayerCAM fusion of
        13 layers`` and, in the layerscope style, what is explained and by which method."""
        if self.fusion is None:
            raise UsageError("this explanation has no fused map: call exp.fused(...) first")
        first = self.fusion.caption + (" · flat map" if self.fusion.flat[index] else "")
        if style == "recipe":
            return [first]
        if style != "layerscope":
            raise UsageError(f"unknown caption style {style!r}; expected 'layerscope' or 'recipe'")
        return [first, self._explained_line(index)]

    def _frame_maps(self, index: int, scale: str) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
        """The maps of image ``index``'s frames, the fused one last, and their colour ranges
        (the fused map always on its own range: its values are not a layer's)."""
        maps = [self.cams[name][index] for name in self.layers]
        ranges = layer_ranges(maps, scale)
        if self.fusion is not None:
            maps.append(self.fusion.map[index])
            ranges.append(map_range(self.fusion.map[index]))
        return maps, ranges

    def iter_frames(self, index: int = 0, options: RenderOptions | None = None, **option_overrides: Any) -> Any:
        """The frames of image ``index``, one per layer (and the fused map's last, when there
        is one), drawn one at a time (a generator of PIL images; see
        :func:`layerscope.render.render_frames`)."""
        from layerscope.render import render_frames

        opts = RenderOptions.of(options, **option_overrides)
        index = self._check_index(index)
        maps, ranges = self._frame_maps(index, opts.scale)
        boxes = self.drawn_boxes(index)
        return render_frames(self.images[index], maps, self.frame_texts(index, opts), opts, ranges, boxes=boxes)

    def drawn_boxes(self, index: int = 0) -> list[Any]:
        """Image ``index``'s detections as :class:`~layerscope.render.DrawnBox` es in the
        picture's pixels (the explained box thick, the others thin; none for other models)."""
        if self.detections is None:
            return []
        return drawn_boxes(self.detections[index], self.images[index].shape[:2], self.info.class_names)

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
        """Draw one layer's frame with matplotlib (default: the last layer; ``"fused"``: the
        fused map's, see :meth:`fused`); returns the axes."""
        import matplotlib.pyplot as plt

        from layerscope.render import render_frames

        opts = RenderOptions.of(options, **option_overrides)
        index = self._check_index(index)
        if layer == "fused" and layer not in self.cams and self.fusion is not None:
            k = len(self.layers)
        else:
            k = self.layers.index(self._check_layer(layer if layer is not None else self.layers[-1]))
        maps, ranges = self._frame_maps(index, opts.scale)
        text = self.frame_texts(index, opts)[k]
        boxes = self.drawn_boxes(index)
        (img,) = render_frames(self.images[index], [maps[k]], [text], opts, [ranges[k]], boxes=boxes)
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


def label_name(label: int | None, class_names: list[str] | None) -> str:
    """A detector's label by name where the model has names, else ``label 3``."""
    if label is None:
        return "any label"
    if class_names and 0 <= int(label) < len(class_names):
        return class_names[int(label)]
    return f"label {int(label)}"


def explained_text(explained: dict[str, Any] | None, class_names: list[str] | None) -> str:
    """An explained box as captions say it: ``(12,8,40,52) cat`` (``no detection``)."""
    if explained is None:
        return "no detection"
    return f"{box_text(explained['box'])} {label_name(explained['label'], class_names)}"


def drawn_boxes(record: dict[str, Any], shape: tuple[int, int], class_names: list[str] | None) -> list[DrawnBox]:
    """One image's detections in the picture's pixels: the boxes are in the model input's
    pixels (``record["size"]``), scaled to the picture (exact when preprocessing resizes
    without cropping)."""
    size = record.get("size") or shape
    sy, sx = shape[0] / max(1, size[0]), shape[1] / max(1, size[1])

    def scaled(b: Any) -> tuple[float, float, float, float]:
        return float(b[0]) * sx, float(b[1]) * sy, float(b[2]) * sx, float(b[3]) * sy

    out = [DrawnBox(scaled(b), thick=False) for b in np.asarray(record["boxes"]).reshape(-1, 4)[:MAX_DRAWN]]
    explained = record.get("explained")
    if explained is not None:
        text = f"{label_name(explained['label'], class_names)} {explained['score']:.2f}"
        out.append(DrawnBox(scaled(explained["box"]), thick=True, text=text))
    return out
