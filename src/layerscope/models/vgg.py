"""VGG-style networks in plain torch, with torchvision-compatible state-dict keys.

``features.N`` / ``classifier.N`` match torchvision's ``vgg16`` exactly, so a weight file
made for torchvision loads here unchanged. Each conv layer also answers to its Keras name
(``block1_conv1`` … ``block5_conv3``, recorded in the model's
:class:`~layerscope.info.ModelInfo` by :func:`layerscope.load_model`): that friendly name
points at the ReLU that follows the conv, so it means "the conv layer with its ReLU", as a
Keras ``Conv2D(activation="relu")``.

The constructors only lay out the modules; :func:`init_vgg_` gives seeded random weights, and
the zoo builds on the ``meta`` device when a weights file is loaded anyway (no wasted init).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Convolutions per block in VGG16 (13 conv layers in 5 blocks).
VGG16_BLOCKS: tuple[int, ...] = (2, 2, 3, 3, 3)
#: Output channels per block in VGG16.
VGG16_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)


def make_features(
    blocks: Sequence[int] = VGG16_BLOCKS, widths: Sequence[int] = VGG16_WIDTHS, in_channels: int = 3
) -> tuple[nn.Sequential, dict[str, str]]:
    """Build a VGG ``features`` stack and its friendly layer names.

    Args:
        blocks: number of 3×3 conv layers in each block; a 2×2 max-pool ends each block.
        widths: output channels of each block.
        in_channels: channels of the input image.

    Returns:
        The ``nn.Sequential`` (indices as torchvision's) and an ordered mapping
        ``{"block1_conv1": "features.1", ...}`` from Keras-style names to the ReLU modules.
    """
    layers: list[nn.Module] = []
    aliases: dict[str, str] = {}
    c = in_channels
    for b, (n, w) in enumerate(zip(blocks, widths, strict=True), start=1):
        for i in range(1, n + 1):
            layers.append(nn.Conv2d(c, w, kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=True))
            aliases[f"block{b}_conv{i}"] = f"features.{len(layers) - 1}"
            c = w
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers), aliases


class VGG16(nn.Module):
    """VGG16 (Simonyan & Zisserman, 2015) with torchvision's module layout."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features, _ = make_features()
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class VGG16GAPHead(nn.Module):
    """The recipe's CIFAR-10 model: VGG16 conv base, global average pooling,
    Linear(512→1024), ReLU, Linear(1024→classes), softmax (the output is a probability)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features, _ = make_features()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(True), nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return torch.softmax(self.head(x), dim=1)


def vgg16_layers() -> dict[str, str]:
    """VGG16's friendly layer names: ``{"block1_conv1": "features.1", …, "block5_conv3": "features.29"}``."""
    return _layer_names(VGG16_BLOCKS)


def _layer_names(blocks: Sequence[int]) -> dict[str, str]:
    names: dict[str, str] = {}
    i = 0
    for b, n in enumerate(blocks, start=1):
        for k in range(1, n + 1):
            names[f"block{b}_conv{k}"] = f"features.{i + 1}"
            i += 2
        i += 1  # the max-pool
    return names


def init_vgg_(model: nn.Module, seed: int | None = 0) -> None:
    """torchvision's VGG initialisation (Kaiming-normal convs, N(0, 0.01) linears, zero
    biases), seeded: the same weights for the same ``seed`` (``None``: torch's global RNG)."""
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.01, generator=gen)
                m.bias.zero_()
