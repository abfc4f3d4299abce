"""Built-in models (the zoo). The core never needs them; the CLI and examples do.

A built-in model is a plain ``torch.nn.Module`` carrying a few attributes that layerscope
reads when present (any user model may set them too):

* ``layerscope_aliases``: ordered ``{friendly name: module path}``; the default layers.
* ``class_names``: the label of each output.
* ``layerscope_preprocess``: ``{"size": (H, W), "mean": (...), "std": (...)}``.
* ``layerscope_outputs``: ``"logits"`` (default) or ``"probabilities"``.
* ``layerscope_warning``: a sentence shown whenever the model is explained.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib import resources
from typing import Any

from layerscope.errors import UsageError, WeightsError

MODELS = {
    "demo": "a small 13-conv VGG-style net trained by layerscope on its synthetic shapes (96×96, 10 classes)",
    "vgg16": "VGG16 (ImageNet, 1000 classes), torchvision-compatible keys",
    "vgg16-cifar10": "the notebook recipe: VGG16 conv base + GAP + Linear(512→1024) + ReLU + Linear(1024→10) + softmax",
}

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

UNTRAINED_HEAD = (
    "the CIFAR-10 head of vgg16-cifar10 is untrained (random weights): its class and maps "
    "mean nothing; pass a full state dict with --weights PATH"
)
RANDOM_WEIGHTS = "the weights are RANDOM: the maps show the architecture, not anything learned"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in torchvision's order."""
    text = resources.files("layerscope.models").joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`."""
    return list(MODELS)


#: The weights each built-in model uses unless told otherwise.
DEFAULT_WEIGHTS = {"demo": "default", "vgg16": "imagenet", "vgg16-cifar10": "imagenet"}


def load_model(name: str, weights: str | None = None, seed: int = 0) -> Any:
    """Build a built-in model in eval mode.

    Args:
        name: one of :func:`list_models`.
        weights: ``None`` for the model's default (:data:`DEFAULT_WEIGHTS`); ``"default"``
            (the demo's shipped weights); ``"imagenet"`` (torchvision's published file:
            downloaded once, SHA-256 checked, cached); ``"random"`` (seeded, says so in a
            warning); or a path to a ``.pth`` state dict or ``.safetensors`` file.
        seed: the seed for random weights.

    Raises:
        UsageError: unknown model name.
        WeightsError: weights missing (offline), unsafe, or not fitting.
    """
    import torch

    from layerscope.models import vgg
    from layerscope.models.weights import (
        VGG16_IMAGENET_URL,
        apply_state_dict,
        download_torchvision,
        read_state_dict,
    )

    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown model {name!r}.{hint} Built-in models: {', '.join(MODELS)}")
    if weights is None:
        weights = DEFAULT_WEIGHTS[name]
    if name == "demo":
        from layerscope.models import demo

        if weights == "imagenet":
            raise UsageError("the demo model has no ImageNet weights; use default, random or a file")
        return demo.build(weights, seed=seed)
    if weights == "default":
        weights = "imagenet"
    torch.manual_seed(seed)
    if name == "vgg16":
        model = vgg.VGG16()
        model.class_names = list(imagenet_classes())
    else:
        model = vgg.VGG16GAPHead()
        model.class_names = list(CIFAR10_CLASSES)
    vgg.init_vgg_(model, seed=seed)
    model.layerscope_preprocess = {"size": (224, 224), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    warning = None
    if weights in (None, "random"):
        warning = RANDOM_WEIGHTS
    elif weights == "imagenet":
        state = read_state_dict(download_torchvision(VGG16_IMAGENET_URL))
        if name == "vgg16":
            apply_state_dict(model, state, VGG16_IMAGENET_URL)
        else:
            base = {k: v for k, v in state.items() if k.startswith("features.")}
            apply_state_dict(model, base, VGG16_IMAGENET_URL, strict=False)
            warning = UNTRAINED_HEAD
    else:
        state = read_state_dict(weights)
        if name == "vgg16-cifar10" and not any(k.startswith("head.") for k in state):
            state = {k: v for k, v in state.items() if k.startswith("features.")}
            if not state:
                raise WeightsError(f"{weights}: holds no 'features.*' (VGG16 conv base) weights")
            apply_state_dict(model, state, str(weights), strict=False)
            warning = UNTRAINED_HEAD
        else:
            apply_state_dict(model, state, str(weights))
    model.layerscope_warning = warning  # shown by explain() each time the model is explained
    return model.eval()


__all__ = ["CIFAR10_CLASSES", "DEFAULT_WEIGHTS", "MODELS", "imagenet_classes", "list_models", "load_model"]
