"""A tiny conv detector whose detections are fixed by hand: six anchor boxes that do not
overlap, each moved by at most 1 pixel by a head on the conv features, with class scores
and an objectness from the same features (so the box target's gradient reaches every
layer through both the classification and the box regression)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: Six anchors (x0, y0, x1, y1) in a 32×32 input, no two overlapping.
ANCHORS = [
    (1.0, 1.0, 10.0, 9.0),
    (12.0, 1.0, 20.0, 12.0),
    (22.0, 2.0, 31.0, 10.0),
    (1.0, 14.0, 12.0, 30.0),
    (14.0, 16.0, 22.0, 24.0),
    (24.0, 15.0, 31.0, 31.0),
]
K = 3
FORMATS = ("torchvision", "yolo5", "yolo8")


class TinyDetector(nn.Module):
    """``fmt``: ``"torchvision"`` (a list of dicts: boxes, labels = the best class,
    scores = objectness × class score), ``"yolo5"`` (``(N, A, 4 + 1 + K)``: centre-size boxes,
    objectness, class scores) or ``"yolo8"`` (``(N, 4 + K, A)``: centre-size boxes and class
    scores, no objectness)."""

    def __init__(self, fmt: str = "torchvision", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fmt = fmt
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        a = len(ANCHORS)
        self.box_head = nn.Linear(8 * 16 * 16, a * 4)
        self.cls_head = nn.Linear(8 * 16 * 16, a * K)
        self.obj_head = nn.Linear(8 * 16 * 16, a)
        self.register_buffer("anchors", torch.tensor(ANCHORS))
        self.forwards = 0

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(boxes xyxy (N, A, 4), class scores (N, A, K), objectness (N, A))``."""
        f = self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1)
        n, a = x.shape[0], len(ANCHORS)
        boxes = self.anchors + torch.tanh(self.box_head(f)).view(n, a, 4)
        cls = torch.sigmoid(self.cls_head(f)).view(n, a, K)
        obj = torch.sigmoid(self.obj_head(f) + 2.0).view(n, a)
        return boxes, cls, obj

    def forward(self, x: torch.Tensor) -> Any:
        self.forwards += 1
        boxes, cls, obj = self.parts(x)
        if self.fmt == "torchvision":
            scores, labels = (cls * obj[..., None]).max(dim=-1)
            return [{"boxes": boxes[i], "labels": labels[i], "scores": scores[i]} for i in range(len(x))]
        xywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)
        if self.fmt == "yolo5":
            return torch.cat([xywh, obj[..., None], cls], dim=-1)
        return torch.cat([xywh, cls], dim=-1).transpose(1, 2)


def image(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 32, 32, generator=g)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Plain IoU of two xyxy boxes (the hand computation)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def hand_detections(model: TinyDetector, x: torch.Tensor) -> list[tuple[np.ndarray, int, float]]:
    """Image 0's detections ``(box, label, score)`` as the model's format defines them."""
    with torch.no_grad():
        boxes, cls, obj = model.parts(x)
    conf = cls * obj[..., None] if model.fmt != "yolo8" else cls
    s, lab = conf.max(dim=-1)
    return [(boxes[0, i].double().numpy(), int(lab[0, i]), float(s[0, i])) for i in range(len(ANCHORS))]
