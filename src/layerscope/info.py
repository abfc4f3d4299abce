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
    """

    name: str | None = None
    layers: Mapping[str, str] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    preprocess: Any = None
    output: str | None = None
    warning: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.output is not None and self.output not in OUTPUT_KINDS:
            raise UsageError(f"ModelInfo.output must be one of {', '.join(OUTPUT_KINDS)} or None, not {self.output!r}")
        object.__setattr__(self, "layers", dict(self.layers))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

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
