"""ResNet-50 in plain torch, with torchvision's exact state-dict keys.

``conv1``, ``bn1``, ``layer1.0.conv1`` … ``layer4.2.bn3``, ``layerN.0.downsample.{0,1}`` and
``fc`` match torchvision's ``resnet50`` (V1.5: the stride of a down-sampling block sits on its
3×3 conv), so torchvision's published weight files load unchanged. The default layers are the
16 bottleneck blocks' outputs, ``layer1.0`` … ``layer4.2``, in forward order: what a ResNet
user targets (a block's output is after its residual sum and final ReLU).
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Bottleneck blocks per stage in ResNet-50.
RESNET50_BLOCKS: tuple[int, ...] = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 (×4 channels) with batch norms, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 (He et al., 2016) with torchvision's module layout."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (n, planes) in enumerate(zip(RESNET50_BLOCKS, (64, 128, 256, 512), strict=True), start=1):
            stride = 1 if i == 1 else 2
            down = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
            blocks = [Bottleneck(inplanes, planes, stride, down)]
            inplanes = planes * 4
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50_layers() -> dict[str, str]:
    """The default layers: every bottleneck block, ``{"layer1.0": "layer1.0", …, "layer4.2": "layer4.2"}``."""
    names = [f"layer{i}.{k}" for i, n in enumerate(RESNET50_BLOCKS, start=1) for k in range(n)]
    return {n: n for n in names}


def init_resnet_(model: nn.Module, seed: int | None = 0) -> None:
    """torchvision's ResNet initialisation, seeded: Kaiming-normal (fan-out) convs, batch norms
    at weight 1 / bias 0 with fresh running statistics, the linear layer uniform in
    ±1/√fan-in (torch's default)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
