"""Built-in models (the zoo) and the one loader. The core never needs them; the CLI and
examples do.

Every model comes back with its facts recorded as a :class:`~layerscope.info.ModelInfo`
(friendly layer names, class names, preprocessing, output kind, a warning and a frame note
such as ``RANDOM WEIGHTS``); nothing is set on the model itself.

* :mod:`~layerscope.models._registry`: :class:`ModelEntry` (a Keras twin is data on it) and
  the table (:data:`MODELS`); the entries themselves in :mod:`~layerscope.models.zoo`, one
  module per architecture;
* :mod:`~layerscope.models.registry`: the loader, :func:`load_model`, :func:`build_for_listing`;
* :mod:`~layerscope.models._build`: the build helpers the loader and external models share;
* architectures: :mod:`~layerscope.models.vgg`, :mod:`~layerscope.models.resnet`,
  :mod:`~layerscope.models.demo`, the Keras twins in :mod:`~layerscope.models.keras_zoo`;
* weights: :mod:`~layerscope.models.weights` (torch files, downloads) and
  :mod:`layerscope.models.keras_zoo.weights` (Keras files, torch ↔ Keras conversion);
* other people's models: :mod:`~layerscope.models.external` (``module:callable``,
  ``torchvision:``, ``timm:``, ``hf:``).

Training (the demo model, the recipe's head) lives in :mod:`layerscope.training`.
"""

from __future__ import annotations

from layerscope.models import zoo  # registers the built-in models
from layerscope.models._registry import (
    DEFAULT_WEIGHTS,
    ENTRIES,
    MODELS,
    KerasTwin,
    ModelEntry,
    get_entry,
    list_models,
)
from layerscope.models.classes import CIFAR10_CLASSES, UNTRAINED_HEAD, imagenet_classes
from layerscope.models.registry import build_for_listing, load_model

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_WEIGHTS",
    "ENTRIES",
    "MODELS",
    "UNTRAINED_HEAD",
    "KerasTwin",
    "ModelEntry",
    "build_for_listing",
    "get_entry",
    "imagenet_classes",
    "list_models",
    "load_model",
    "zoo",
]
