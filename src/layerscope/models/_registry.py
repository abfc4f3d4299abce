"""The zoo's registry: :class:`ModelEntry` (one built-in model, its Keras twin as data) and
the table of entries. Each entry is defined beside its architecture's facts in
:mod:`layerscope.models.zoo` and registered here with :func:`register`; nothing here imports
an entry, a loader or a framework."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError, unknown_name
from layerscope.info import ModelInfo


@dataclass(frozen=True)
class KerasTwin:
    """The Keras twin of a built-in model, as data (no ``name == ...`` branches anywhere).

    Attributes:
        build: ``build(shape)`` → the Keras architecture for an ``(H, W, 3)`` input.
        class_names: the twin's class names.
        include_top: whether Keras' published ImageNet file for it has the classifier top.
        base: the layer holding the VGG16 base, for a file of the base alone (the rest is
            then an untrained head), or ``None`` when a file is meant to be whole.
        head: ``head(model)`` → the layers that stay random with a base-only file.
    """

    build: Callable[[tuple[int, int, int]], Any]
    class_names: Callable[[], tuple[str, ...]]
    include_top: bool = True
    base: str | None = None
    head: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One built-in model.

    Attributes:
        name: what :func:`~layerscope.models.load_model` is called with.
        description: one line for listings.
        build: the torch architecture, without meaningful weights (called on the ``meta``
            device when weights are loaded from a file).
        init: ``init(model, seed)``: seeded random weights, in place (buffers included).
        info: the model's facts with trained weights.
        default_weights: the weights used when none are named.
        published: named weights (``"imagenet"``, ``"default"``) → a function returning the
            local file (downloading it once, checked, when needed).
        partial: for a file that holds only part of the model (the recipe's conv base): the
            part to load, or ``None`` when the file is meant to be whole. The rest keeps its
            random weights and the info says the head is untrained.
        keras: the Keras twin, if any.
    """

    name: str
    description: str
    build: Callable[[], Any]
    init: Callable[[Any, int], None]
    info: Callable[[], ModelInfo]
    default_weights: str = "imagenet"
    published: Mapping[str, Callable[[], Path]] = field(default_factory=dict)
    partial: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    keras: KerasTwin | None = None


#: ``{name: entry}`` of the built-in models, in registration order.
ENTRIES: dict[str, ModelEntry] = {}
#: ``{name: description}`` of the built-in models.
MODELS: dict[str, str] = {}
#: The weights each built-in model uses unless told otherwise.
DEFAULT_WEIGHTS: dict[str, str] = {}


def register(*entries: ModelEntry) -> None:
    """Add built-in models (a name registered twice is a programming error)."""
    for e in entries:
        if e.name in ENTRIES:
            raise ValueError(f"model {e.name!r} is registered twice")
        ENTRIES[e.name] = e
        MODELS[e.name] = e.description
        DEFAULT_WEIGHTS[e.name] = e.default_weights


def list_models() -> list[str]:
    """Names accepted by :func:`~layerscope.models.load_model` (besides ``module:callable``,
    ``torchvision:``, ``timm:``, ``hf:`` names and, for Keras, ``.keras`` files)."""
    return list(ENTRIES)


def get_entry(name: str) -> ModelEntry:
    """The entry of a built-in model; an unknown name lists the close matches."""
    try:
        return ENTRIES[name]
    except KeyError:
        raise UsageError(
            unknown_name(
                "model",
                name,
                ENTRIES,
                cutoff=0.4,
                n=3,
                valid="Built-in models",
                also="; or module.path:callable, torchvision:NAME, timm:NAME, hf:REPO-ID",
            )
        ) from None


def keras_names() -> list[str]:
    """The built-in models with a Keras twin."""
    return [n for n, e in ENTRIES.items() if e.keras is not None]
