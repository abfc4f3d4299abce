"""The built-in demo detector: a small CenterNet-style one-stage detector trained on the
multi-object shapes scenes (:mod:`layerscope.datasets.scenes`); its training is
:mod:`layerscope.training.demo_detector`.

Architecture (plain torch, ~0.5 M parameters): eight 3×3 conv + ReLU layers down to 1/16 of
the input (``conv1`` … ``conv8``), a neck that brings ``conv8`` back to 1/8 and joins it to
``conv6`` (``neck``), and two heads on that 1/8 grid (16×16 cells for a 128×128 scene): a
heatmap of object centres per class (``heat_conv`` → ``heatmap``, logits) and a box head
(``box_conv`` → ``box``: log width, log height in cells and the centre's offset in its
cell), as in CenterNet (Zhou et al., "Objects as Points", 2019).

``model(x)`` returns, like torchvision's detectors in eval mode, one
``dict(boxes (K, 4) xyxy float, labels (K,) int64, scores (K,))`` per image (see
:func:`decode`: heatmap peaks, then class-wise NMS, in plain torch). The scores (and the
boxes) stay differentiable with respect to the features, so a callable target of
:func:`layerscope.explain` can explain one detection. ``model.raw(x)`` gives the heads'
output, for training.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from layerscope.datasets.scenes import SCENE_SIZE
from layerscope.datasets.shapes import CLASS_NAMES
from layerscope.info import RANDOM_WEIGHTS, ModelInfo
from layerscope.inputs import Preprocess
from layerscope.models.detection import batched_nms

#: ``(name, in, out, stride)`` of the backbone's convs.
BACKBONE: tuple[tuple[str, int, int, int], ...] = (
    ("conv1", 3, 16, 2),
    ("conv2", 16, 32, 2),
    ("conv3", 32, 48, 1),
    ("conv4", 48, 64, 2),
    ("conv5", 64, 64, 1),
    ("conv6", 64, 96, 1),
    ("conv7", 96, 128, 2),
    ("conv8", 128, 128, 1),
)
#: Channels of the neck and of each head's hidden conv.
NECK, HEAD = 64, 48
#: The heads' grid is 1/8 of the input.
STRIDE = 8
IMAGE_SIZE = SCENE_SIZE
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
#: Decoding: heatmap peaks kept per image, the lowest score reported, the NMS IoU.
TOP_K, SCORE_THRESHOLD, NMS_IOU = 20, 0.05, 0.5
#: CenterNet's prior: the heatmap bias starts at logit(0.1).
PRIOR = -math.log((1 - 0.1) / 0.1)
#: Scene seeds: training, measuring (never trained on), sample pictures.
TRAIN_SEED, EVAL_SEED, SAMPLE_SEED = 0, 1, 2
#: :func:`sample_image` is scene ``SAMPLE_INDEX`` of :data:`SAMPLE_SEED`: three objects, all detected.
SAMPLE_INDEX = 2
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo_detector.safetensors"
NOTE = "demo detector (synthetic shapes scenes)"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())


class DemoDetector(nn.Module):
    """A CenterNet-style detector: ``forward`` → detections, ``raw`` → the heads' maps."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.ModuleDict({name: _block(i, o, s) for name, i, o, s in BACKBONE})
        lateral = next(o for name, _, o, _ in BACKBONE if name == "conv6")
        self.neck = _block(BACKBONE[-1][2] + lateral, NECK, 1)
        self.heat_conv = _block(NECK, HEAD, 1)
        self.heatmap = nn.Conv2d(HEAD, num_classes, 1)
        self.box_conv = _block(NECK, HEAD, 1)
        self.box = nn.Conv2d(HEAD, 4, 1)

    def raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' output: ``heatmap`` ``(N, classes, h, w)`` centre logits and ``box``
        ``(N, 4, h, w)`` (log width, log height in cells, centre offset x, y in its cell)."""
        feats = {}
        for name, block in self.backbone.items():
            x = block(x)
            feats[name] = x
        up = F.interpolate(x, size=feats["conv6"].shape[-2:], mode="nearest")
        n = self.neck(torch.cat([up, feats["conv6"]], dim=1))
        return {"heatmap": self.heatmap(self.heat_conv(n)), "box": self.box(self.box_conv(n))}

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections, one ``dict(boxes, labels, scores)`` per image (:func:`decode`)."""
        return decode(self.raw(x), int(x.shape[-1]), int(x.shape[-2]))


def decode(
    raw: dict[str, torch.Tensor],
    width: int,
    height: int,
    top_k: int = TOP_K,
    threshold: float = SCORE_THRESHOLD,
    iou: float = NMS_IOU,
) -> list[dict[str, torch.Tensor]]:
    """The heads' maps → detections: the ``top_k`` local maxima (3×3) of the sigmoid heatmap
    of every class with score ≥ ``threshold``, each with its cell's box, then class-wise NMS
    at ``iou``; boxes clipped to the image. Only *which* cells are kept is decided on
    detached values: each score is ``sigmoid(heatmap[c, y, x])``, differentiable."""
    heat = torch.sigmoid(raw["heatmap"].float())
    box = raw["box"].float()
    n, c, h, w = heat.shape
    with torch.no_grad():
        peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
        ranked = torch.where(peaks, heat, torch.zeros_like(heat)).flatten(1)
        values, index = ranked.topk(min(top_k, c * h * w), dim=1)
    sx, sy = width / w, height / h
    out = []
    for i in range(n):
        idx = index[i][values[i] >= threshold]
        cls, cell = idx // (h * w), idx % (h * w)
        ys, xs = cell // w, cell % w
        scores = heat[i].flatten(0)[idx]
        b = box[i][:, ys, xs]  # (4, K)
        bw, bh = torch.exp(b[0].clamp(max=6.0)) * sx, torch.exp(b[1].clamp(max=6.0)) * sy
        cx, cy = (xs + b[2]) * sx, (ys + b[3]) * sy
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)  # fmt: skip
        keep = batched_nms(boxes, scores, cls, iou)
        out.append({"boxes": boxes[keep], "labels": cls[keep].long(), "scores": scores[keep]})
    return out


def layers() -> dict[str, str]:
    """The default layers, friendly name → module path: each conv with its ReLU, through
    the backbone, the neck and the heatmap branch. Left out: the box branch (a detection's
    score does not depend on it) and the 1×1 ``heatmap`` logits conv, the classifier of each
    cell (its map is the class's logit map, flat after the ReLU for a detection scoring
    under 0.5); their paths, ``box_conv.1`` and ``heatmap``, still work."""
    names = {name: f"backbone.{name}.1" for name, *_ in BACKBONE}
    return {**names, "neck": "neck.1", "heat_conv": "heat_conv.1"}


def info(random: bool = False) -> ModelInfo:
    """The detector's facts: its layers, the shapes' class names, its preprocessing."""
    return ModelInfo(
        name="demo-detector",
        layers=layers(),
        class_names=tuple(CLASS_NAMES),
        preprocess=Preprocess((IMAGE_SIZE, IMAGE_SIZE), MEAN, STD),
        warning=RANDOM_WEIGHTS if random else None,
        note=f"{NOTE}, RANDOM WEIGHTS" if random else NOTE,
    )


def init_detector_(model: nn.Module, seed: int) -> None:
    """Deterministic initialisation: He-normal convs, zero biases, the heatmap's bias at
    CenterNet's prior (:data:`PRIOR`: every cell starts at score 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
        if isinstance(model, DemoDetector):
            model.heatmap.weight.mul_(0.1)
            model.heatmap.bias.fill_(PRIOR)
            model.box.weight.mul_(0.1)


def shipped_weights() -> Path:
    """The shipped weights file (an error naming the command that makes it when missing)."""
    if not DEFAULT_WEIGHTS.is_file():
        from layerscope.errors import WeightsError

        raise WeightsError(
            f"{DEFAULT_WEIGHTS}: the demo detector's weights are missing; make them with "
            "`python -m layerscope.training.demo_detector --train`"
        )
    return DEFAULT_WEIGHTS


def build(weights: str | os.PathLike[str] | None = "default", seed: int = 0) -> DemoDetector:
    """``layerscope.load_model("demo-detector", weights, seed=seed)``, in eval mode."""
    from layerscope.models.registry import load_model

    return load_model("demo-detector", weights="random" if weights is None else weights, seed=seed)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` → normalised float32 ``(N, 3, H, W)``."""
    images = np.require(images, dtype=np.uint8, requirements=["C", "W"])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def sample_image() -> tuple[Image.Image, tuple[np.ndarray, np.ndarray]]:
    """The built-in sample scene (``layerscope tour --model demo-detector``): scene
    :data:`SAMPLE_INDEX` of :data:`SAMPLE_SEED`, never used in training; ``(image, (boxes,
    labels))``."""
    from layerscope.datasets.scenes import make_scene

    image, annotation, _ = make_scene(SAMPLE_SEED, SAMPLE_INDEX, IMAGE_SIZE)
    return Image.fromarray(image), annotation


def detect(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """Detections of uint8 ``(N, H, W, 3)`` images, without gradients."""
    out: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            out += [{k: v.detach() for k, v in d.items()} for d in model(preprocess(images[s : s + batch_size]))]
    return out


def map50(model: nn.Module, n: int = 300, seed: int = EVAL_SEED, batch_size: int = 50) -> float:
    """mAP@0.5 of ``model`` on ``n`` fresh scenes of seed ``seed``
    (:func:`~layerscope.models.detection.mean_average_precision`)."""
    from layerscope.datasets.scenes import iter_scenes
    from layerscope.models.detection import mean_average_precision

    dets: list[dict[str, torch.Tensor]] = []
    truth: list[Any] = []
    for images, anns, _ in iter_scenes(n, seed, IMAGE_SIZE, batch=batch_size):
        dets += detect(model, images, batch_size)
        truth += anns
    return mean_average_precision(dets, truth, num_classes=len(CLASS_NAMES))[0]
