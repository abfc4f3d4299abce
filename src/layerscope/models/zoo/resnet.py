"""The entry of ResNet-50 (:mod:`layerscope.models.resnet`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerscope.info import ModelInfo
from layerscope.inputs import Preprocess
from layerscope.models._registry import ModelEntry


def _build() -> Any:
    from layerscope.models.resnet import ResNet50

    return ResNet50()


def _init(model: Any, seed: int) -> None:
    from layerscope.models.resnet import init_resnet_

    init_resnet_(model, seed)


def _info() -> ModelInfo:
    from layerscope.models.classes import imagenet_classes
    from layerscope.models.resnet import resnet50_layers

    return ModelInfo(
        name="resnet50",
        layers=resnet50_layers(),
        class_names=imagenet_classes(),
        preprocess=Preprocess(),
        output="logits",
    )


def _imagenet_file() -> Path:
    from layerscope.models import weights

    return weights.download_torchvision(weights.RESNET50_IMAGENET_URL)


RESNET50 = ModelEntry(
    "resnet50",
    "ResNet-50 (ImageNet, 1000 classes), torchvision-compatible keys; default layers: the 16 blocks",
    _build,
    _init,
    _info,
    published={"imagenet": _imagenet_file},
)

#: This module's entries, in listing order.
ENTRIES = (RESNET50,)
