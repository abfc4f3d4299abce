"""Shared by the torch capture tests: a tiny input, VGG16's friendly names found
independently of the zoo, a small conv net."""

from __future__ import annotations

import torch
from torch import nn

from layerscope.info import ModelInfo

X_TINY = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])


def vgg_info(model: nn.Module, **facts: object) -> ModelInfo:
    """VGG16's friendly names (``block1_conv1`` … → the ReLU after each conv), found by
    walking ``model.features`` (independent of the zoo)."""
    names, block, conv = {}, 1, 0
    for i, m in enumerate(model.features):
        if isinstance(m, nn.ReLU):
            conv += 1
            names[f"block{block}_conv{conv}"] = f"features.{i}"
        elif isinstance(m, nn.MaxPool2d):
            block, conv = block + 1, 0
    return ModelInfo(layers=names, **facts)


def small_net(in_channels: int = 3, classes: int = 4, fixed: int | None = None) -> nn.Module:
    """conv → ReLU → max-pool ×3 (8× down-sampling) → global pool or a fixed-size flatten head."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(3):
        layers += [nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = 4
    if fixed is None:
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes)]
    else:
        head = [nn.Flatten(), nn.Linear(4 * (fixed // 8) ** 2, classes)]
    return nn.Sequential(*layers, *head).eval()
