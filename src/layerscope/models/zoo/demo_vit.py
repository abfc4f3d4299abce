"""The entry of the demo ViT (:mod:`layerscope.models.demo_vit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerscope.info import ModelInfo
from layerscope.models._registry import ModelEntry


def _build() -> Any:
    from layerscope.models.demo_vit import DemoViT

    return DemoViT()


def _init(model: Any, seed: int) -> None:
    from layerscope.models.demo_vit import init_demo_vit_

    init_demo_vit_(model, seed)


def _info() -> ModelInfo:
    from layerscope.models import demo_vit

    return demo_vit.info()


def _file() -> Path:
    from layerscope.models import demo_vit

    return demo_vit.shipped_weights()


DEMO_VIT = ModelEntry(
    "demo-vit",
    "a small 4-block ViT trained by layerscope on its synthetic shapes (96×96, patches of 8, 10 classes)",
    _build,
    _init,
    _info,
    default_weights="default",
    published={"default": _file},
)

#: This module's entries, in listing order.
ENTRIES = (DEMO_VIT,)
