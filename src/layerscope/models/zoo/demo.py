"""The entry of the demo model (:mod:`layerscope.models.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerscope.info import ModelInfo
from layerscope.models._registry import ModelEntry


def _build() -> Any:
    from layerscope.models.demo import DemoNet

    return DemoNet()


def _init(model: Any, seed: int) -> None:
    from layerscope.models.demo import init_demo_

    init_demo_(model, seed)


def _info() -> ModelInfo:
    from layerscope.models import demo

    return demo.info()


def _file() -> Path:
    from layerscope.models import demo

    return demo.shipped_weights()


DEMO = ModelEntry(
    "demo",
    "a small 13-conv VGG-style net trained by layerscope on its synthetic shapes (96×96, 10 classes)",
    _build,
    _init,
    _info,
    default_weights="default",
    published={"default": _file},
)

#: This module's entries, in listing order.
ENTRIES = (DEMO,)
