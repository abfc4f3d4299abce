"""The entries of VGG16 and the notebook recipe (:mod:`layerscope.models.vgg`), with their
Keras twins (:mod:`layerscope.models.keras_zoo.architecture`) as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerscope.errors import WeightsError
from layerscope.info import ModelInfo
from layerscope.inputs import Preprocess
from layerscope.models._registry import KerasTwin, ModelEntry


def _vgg16() -> Any:
    from layerscope.models.vgg import VGG16

    return VGG16()


def _recipe() -> Any:
    from layerscope.models.vgg import VGG16GAPHead

    return VGG16GAPHead()


def _init(model: Any, seed: int) -> None:
    from layerscope.models.vgg import init_vgg_

    init_vgg_(model, seed)


def _imagenet() -> tuple[str, ...]:
    from layerscope.models.classes import imagenet_classes

    return imagenet_classes()


def _cifar10() -> tuple[str, ...]:
    from layerscope.models.classes import CIFAR10_CLASSES

    return CIFAR10_CLASSES


def _info(name: str, classes: tuple[str, ...], output: str) -> ModelInfo:
    from layerscope.models.vgg import vgg16_layers

    return ModelInfo(name=name, layers=vgg16_layers(), class_names=classes, preprocess=Preprocess(), output=output)


def _vgg16_info() -> ModelInfo:
    return _info("vgg16", _imagenet(), "logits")


def _recipe_info() -> ModelInfo:
    return _info("vgg16-cifar10", _cifar10(), "probabilities")


def _imagenet_file() -> Path:
    from layerscope.models import weights

    return weights.download_torchvision(weights.VGG16_IMAGENET_URL)


def _recipe_base(state: dict[str, Any]) -> dict[str, Any] | None:
    """A file without the recipe's head (``head.*``): its conv base (``features.*``) only."""
    if any(k.startswith("head.") for k in state):
        return None
    base = {k: v for k, v in state.items() if k.startswith("features.")}
    if not base:
        raise WeightsError("the file holds no 'features.*' (VGG16 conv base) weights and no 'head.*' weights")
    return base


def _keras_vgg16(shape: tuple[int, int, int]) -> Any:
    from layerscope.models.keras_zoo.architecture import build_vgg16

    return build_vgg16(shape, include_top=True)


def _keras_recipe(shape: tuple[int, int, int]) -> Any:
    from layerscope.models.keras_zoo.architecture import build_recipe

    return build_recipe(shape)


def _keras_recipe_head(model: Any) -> Any:
    from layerscope.models.keras_zoo.architecture import recipe_head

    return recipe_head(model)


VGG16 = ModelEntry(
    "vgg16",
    "VGG16 (ImageNet, 1000 classes), torchvision-compatible keys",
    _vgg16,
    _init,
    _vgg16_info,
    published={"imagenet": _imagenet_file},
    keras=KerasTwin(_keras_vgg16, _imagenet, include_top=True),
)
RECIPE = ModelEntry(
    "vgg16-cifar10",
    "the notebook recipe: VGG16 conv base + GAP + Linear(512→1024) + ReLU + Linear(1024→10) + softmax",
    _recipe,
    _init,
    _recipe_info,
    published={"imagenet": _imagenet_file},
    partial=_recipe_base,
    keras=KerasTwin(_keras_recipe, _cifar10, include_top=False, base="vgg16", head=_keras_recipe_head),
)

#: This module's entries, in listing order.
ENTRIES = (VGG16, RECIPE)
