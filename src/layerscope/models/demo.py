"""The built-in demo model: a narrow VGG-style network trained on synthetic shapes (its
architecture, weights and facts; its training is :mod:`layerscope.training.demo`).

It has VGG16's layout, 13 conv layers in 5 blocks with the same friendly names
(``block1_conv1`` … ``block5_conv3``), but narrow widths, then global average pooling and one
linear layer (logits). It is trained by layerscope itself on :mod:`layerscope.datasets.shapes`,
which it generates, so it works offline, and its maps can be checked: every image's object
mask is known.

It sees 96×96 images (its last conv block then has 6×6 cells). Batch norm after every conv
makes the plain 13-layer stack trainable from scratch in minutes; it is folded into the convs
when training ends, so the shipped model is plain conv + ReLU. Train (deterministic on the
CPU; 5–10 minutes on 2 cores)::

    python -m layerscope.training.demo --train

Dataset seeds: training uses seed ``--seed`` (default :data:`TRAIN_SEED`);
:data:`EVAL_SEED` is kept for measuring, :data:`SAMPLE_SEED` for :func:`sample_image`. Neither
is used in training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from layerscope.datasets.shapes import CLASS_NAMES, make_dataset, make_sample
from layerscope.info import RANDOM_WEIGHTS, ModelInfo
from layerscope.inputs import Preprocess
from layerscope.models.vgg import make_features, vgg16_layers

#: Output channels of the five blocks (VGG16: 64, 128, 256, 512, 512).
WIDTHS: tuple[int, ...] = (8, 16, 32, 64, 128)
#: Side of the (square) images the model is trained on. The last conv block runs at 1/16 of
#: it: 6×6 here. At 64 pixels (4×4) the maps are too coarse for the pointing game: for about
#: one image in eight no cell centre of the last conv layer even lies on the object.
IMAGE_SIZE = 96
#: Per-channel normalisation (0..1 scale), measured on the shapes dataset.
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
#: Dataset seed of the shipped weights' training data.
TRAIN_SEED = 0
#: Dataset seed for measuring accuracy and maps (never used in training).
EVAL_SEED = 1
#: Dataset seed of :func:`sample_image` (never used in training).
SAMPLE_SEED = 2
#: :func:`sample_image` ``(seed)`` is sample ``SAMPLE_INDEX + seed`` of :data:`SAMPLE_SEED`:
#: the default is an arrow over stripes, beside a scribble shaped like an arrow head.
SAMPLE_INDEX = 16
#: Where the shipped weights live.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo_shapes.safetensors"
#: The label drawn on every frame of the demo model.
NOTE = "demo model (10 synthetic shapes)"


class DemoNet(nn.Module):
    """VGG16's 13-conv layout, narrow, + global average pooling + a linear head (logits)."""

    def __init__(self, widths: Sequence[int] | None = None, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        widths = tuple(widths) if widths is not None else WIDTHS
        self.features, _ = make_features(widths=widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def info(random: bool = False) -> ModelInfo:
    """The demo model's facts: friendly layer names, the shapes' class names, its
    preprocessing (:data:`IMAGE_SIZE`, :data:`MEAN`, :data:`STD`), logits."""
    return ModelInfo(
        name="demo",
        layers=vgg16_layers(),  # VGG16's 13-conv layout, so the same module paths
        class_names=tuple(CLASS_NAMES),
        preprocess=Preprocess((IMAGE_SIZE, IMAGE_SIZE), MEAN, STD),
        output="logits",
        warning=RANDOM_WEIGHTS if random else None,
        note=f"{NOTE}, RANDOM WEIGHTS" if random else NOTE,
    )


def init_demo_(model: nn.Module, seed: int) -> None:
    """Deterministic initialisation: He-normal convs with fan-in scaling (which keeps the
    activations' scale through 13 layers without batch norm), zero biases, a small head."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                gain = 2.0 if isinstance(m, nn.Conv2d) else 0.1
                m.weight.normal_(0.0, math.sqrt(gain / fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()


def shipped_weights() -> Path:
    """The shipped weights file (an error naming the command that makes it when missing)."""
    if not DEFAULT_WEIGHTS.is_file():
        from layerscope.errors import WeightsError

        raise WeightsError(
            f"{DEFAULT_WEIGHTS}: the demo model's weights are missing; make them with "
            "`python -m layerscope.training.demo --train`"
        )
    return DEFAULT_WEIGHTS


def build(weights: str | os.PathLike[str] | None = "default", seed: int = 0) -> DemoNet:
    """The demo model, in eval mode: ``layerscope.load_model("demo", weights, seed=seed)``.

    Args:
        weights: ``"default"`` (the shipped, trained weights), ``"random"`` or ``None``
            (deterministic random initialisation from ``seed``; the model's info then carries
            the random-weights warning), or a path to a ``.safetensors`` / ``.pth`` state dict.
        seed: the seed of the random initialisation.

    Raises:
        layerscope.errors.WeightsError: the weights file is missing, unreadable or does not fit.
    """
    from layerscope.models.registry import load_model

    return load_model("demo", weights="random" if weights is None else weights, seed=seed)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images of :data:`IMAGE_SIZE` → normalised ``(N, 3, H, W)`` float32."""
    images = np.require(images, dtype=np.uint8, requirements=["C", "W"])  # torch wants it writable
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def sample_image(seed: int = 0) -> tuple[Image.Image, int, np.ndarray]:
    """A fresh shapes image for demos: sample ``SAMPLE_INDEX + seed`` of dataset seed
    :data:`SAMPLE_SEED`, which is never used in training.

    The default (``seed=0``: an arrow over stripes, beside a scribble shaped like an arrow
    head) is classified correctly by the shipped weights (p > 0.99), its Grad-CAM at
    block5_conv3 points at the object (a hit in the pointing game), and none of its 13
    Grad-CAMs is flat.

    Returns:
        ``(image, label, mask)``: a PIL RGB image of :data:`IMAGE_SIZE` pixels, its class
        index into :data:`~layerscope.datasets.shapes.CLASS_NAMES`, its boolean object mask.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    image, label, mask = make_sample(SAMPLE_SEED, SAMPLE_INDEX + seed, IMAGE_SIZE)
    return Image.fromarray(image), label, mask


def accuracy(model: nn.Module, n: int = 1000, seed: int = EVAL_SEED, batch_size: int = 250) -> float:
    """Top-1 accuracy of ``model`` on ``n`` fresh samples of dataset seed ``seed``."""
    correct = 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            images, labels, _ = make_dataset(min(batch_size, n - start), seed, IMAGE_SIZE, start=start)
            pred = model(preprocess(images)).argmax(dim=1).numpy()
            correct += int((pred == labels).sum())
    return correct / max(n, 1)
