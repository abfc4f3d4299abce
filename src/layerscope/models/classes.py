"""Facts the built-in models share, each written once: class names and the untrained-head text."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from layerscope.datasets.cifar10 import CLASSES as CIFAR10_CLASSES

#: The warning of the recipe model whose CIFAR-10 head was not trained (torch and Keras alike).
UNTRAINED_HEAD = (
    "the CIFAR-10 head of vgg16-cifar10 is untrained (random weights): its class and maps mean nothing; "
    "train it with `layerscope train-head` and pass the file it writes (or a full state dict) with --weights PATH"
)
#: The label drawn on every frame of such a model.
UNTRAINED_HEAD_NOTE = "untrained head"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in torchvision's order."""
    text = resources.files("layerscope.models").joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)


__all__ = ["CIFAR10_CLASSES", "UNTRAINED_HEAD", "UNTRAINED_HEAD_NOTE", "imagenet_classes"]
