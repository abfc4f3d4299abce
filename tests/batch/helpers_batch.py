"""Shared by the batch tests: a tiny hand-sized conv net and its model info."""

from __future__ import annotations

import torch
from torch import nn

from layerscope.datasets.shapes import CLASS_NAMES
from layerscope.info import ModelInfo
from layerscope.inputs import Preprocess

FAST = {"progress": "none", "workers": 0, "batch_size": 8}


def tiny_model(seed: int = 0) -> tuple[nn.Module, ModelInfo]:
    """conv(3→4) ReLU conv(4→8, stride 2) ReLU → GAP → linear(8→10), 32×32 inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    info = ModelInfo(
        class_names=CLASS_NAMES,
        preprocess=Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3),
        output="logits",
    )
    return model, info
