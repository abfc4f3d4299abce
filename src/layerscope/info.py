"""``ModelInfo``: every fact layerscope knows about a model, in one object.

Model facts travel as one :class:`ModelInfo` — friendly layer names, class names,
preprocessing, output kind, a warning — never as attributes on the user's model. Built-in
models come with theirs (:func:`layerscope.load_model` records it); for any other model
``explain`` derives one (ImageNet preprocessing at 224×224, no class names, output kind
detected), and ``explain(..., info=ModelInfo(...))`` lets a caller supply their own.

The record of which built-in model carries which info is a weak mapping kept here, keyed by
the model object: nothing is set on the model, and the entry goes when the model does.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layerscope.errors import UsageError

#: ``ModelInfo.output`` values: raw scores, or an output that already is a probability.
OUTPUT_KINDS = ("logits", "probabilities")

#: How many class names and layers ``repr(ModelInfo)`` shows before "…".
_REPR_FIRST = 3

#: The warning of a model with random weights; shown on every explanation and drawn on frames.
RANDOM_WEIGHTS = "the weights are RANDOM: the maps show the architecture, not anything learned"


@dataclass(frozen=True)
class ModelInfo:
    """What layerscope knows about a model.

    Attributes:
        name: the built-in model's name (``"demo"``, ``"vgg16"`` …), ``None`` for a user's model.
        layers: ordered ``{friendly name: framework path}``; when not empty these are the
            default layers and answer to their friendly names (``block1_conv1`` →
            ``features.1``), besides the framework's own paths.
        class_names: the label of each output index.
        preprocess: a :class:`~layerscope.inputs.Preprocess` or a callable from a list of uint8
            RGB ``(H, W, 3)`` arrays to the model input; ``None``: ImageNet at 224×224.
        output: ``"logits"``, ``"probabilities"`` or ``None`` (detected from the values).
        warning: a sentence shown whenever the model is explained (random weights, an
            untrained head).
        note: a short label drawn on every frame when the model is not a general-purpose
            classifier, e.g. ``"demo model (10 synthetic shapes)"`` or ``"RANDOM WEIGHTS"``.
        input_size: ``(height, width)`` when the model accepts only that input size (a
            Hugging Face ViT's ``image_size``), ``None`` when any size works;
            :meth:`size_hint` says it in a sentence for an error message.
        tokenizer: the model's text tokenizer (called as a Hugging Face tokenizer is), for
            :func:`layerscope.targets.text`; a CLIP folder loaded by ``load_model("hf:...")``
            has its own, loaded when first used.
    """

    name: str | None = None
    layers: Mapping[str, str] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    preprocess: Any = None
    output: str | None = None
    warning: str | None = None
    note: str | None = None
    input_size: tuple[int, int] | None = None
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.output is not None and self.output not in OUTPUT_KINDS:
            raise UsageError(f"ModelInfo.output must be one of {', '.join(OUTPUT_KINDS)} or None, not {self.output!r}")
        object.__setattr__(self, "layers", dict(self.layers))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))

    def __repr__(self) -> str:
        """Short: class names and layers as a count and the first few (not 1,000 names)."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == {} or value == f.default:
                continue
            if f.name == "class_names":
                head = ", ".join(repr(c) for c in value[:_REPR_FIRST])
                value = f"<{len(value)} names: {head}{', …' if len(value) > _REPR_FIRST else ''}>"
            elif f.name == "layers":
                head = ", ".join(list(value)[:_REPR_FIRST])
                value = f"<{len(value)} layers: {head}{', …' if len(value) > _REPR_FIRST else ''}>"
            else:
                value = repr(value)
            parts.append(f"{f.name}={value}")
        return f"ModelInfo({', '.join(parts)})"

    def size_hint(self) -> str | None:
        """``"this model expects 64×64 input: --size 64"`` when the model takes one input size
        only (:attr:`input_size`), else ``None``."""
        if self.input_size is None:
            return None
        h, w = self.input_size
        flag = f"--size {h}" if h == w else f"--size {h} {w}"
        return f"this model expects {h}×{w} input: {flag}"

    def replace(self, **changes: Any) -> ModelInfo:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def preprocessor(self) -> Callable[[Sequence[Any]], Any]:
        """The preprocessing to use: this info's, else ImageNet normalisation at 224×224."""
        from layerscope.inputs import Preprocess

        return self.preprocess if self.preprocess is not None else Preprocess()


_INFOS: weakref.WeakKeyDictionary[Any, ModelInfo] = weakref.WeakKeyDictionary()
_BY_ID: dict[int, tuple[weakref.ref[Any], ModelInfo]] = {}


def attach_info(model: Any, info: ModelInfo) -> Any:
    """Record ``info`` as the facts of ``model`` (nothing is set on the model); returns ``model``."""
    try:
        _INFOS[model] = info
    except TypeError:  # an unhashable model object: fall back to its identity while it lives
        key = id(model)
        _BY_ID[key] = (weakref.ref(model, lambda _r: _BY_ID.pop(key, None)), info)
    return model


def model_info(model: Any) -> ModelInfo | None:
    """The :class:`ModelInfo` recorded for ``model`` by :func:`attach_info`, or ``None``."""
    try:
        found = _INFOS.get(model)
    except TypeError:
        found = None
    if found is not None:
        return found
    entry = _BY_ID.get(id(model))
    if entry is not None and entry[0]() is model:
        return entry[1]
    return None


def info_for(model: Any, given: ModelInfo | None = None) -> ModelInfo:
    """The info to use for ``model``: ``given``, else the recorded one, else a plain default."""
    if given is not None:
        if not isinstance(given, ModelInfo):
            raise UsageError(f"info must be a layerscope.ModelInfo, not {type(given).__name__}")
        return given
    return model_info(model) or ModelInfo()
