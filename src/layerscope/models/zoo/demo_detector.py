"""The entry of the demo detector (:mod:`layerscope.models.demo_detector`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerscope.info import ModelInfo
from layerscope.models._registry import ModelEntry


def _build() -> Any:
    from layerscope.models.demo_detector import DemoDetector

    return DemoDetector()


def _init(model: Any, seed: int) -> None:
    from layerscope.models.demo_detector import init_detector_

    init_detector_(model, seed)


def _info() -> ModelInfo:
    from layerscope.models import demo_detector

    return demo_detector.info()


def _file() -> Path:
    from layerscope.models import demo_detector

    return demo_detector.shipped_weights()


DEMO_DETECTOR = ModelEntry(
    "demo-detector",
    "a small CenterNet-style detector trained by layerscope on its synthetic shapes scenes (128×128, 10 classes)",
    _build,
    _init,
    _info,
    default_weights="default",
    published={"default": _file},
)

#: This module's entries, in listing order.
ENTRIES = (DEMO_DETECTOR,)
