"""Keras 3 built-in models: the notebook recipe and VGG16, with their :class:`ModelInfo`.

* :mod:`~layerscope.models.keras_zoo.architecture`: the architectures and their seeded
  random weights;
* :mod:`~layerscope.models.keras_zoo.weights`: ``.keras`` files, weight files (Keras' and
  torch state dicts, converted), Keras' published VGG16 files;
* training the recipe's head: :mod:`layerscope.training.head`.

Load through the one loader, ``layerscope.load_model(name, weights, framework="keras")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError, WeightsError
from layerscope.info import RANDOM_WEIGHTS, ModelInfo
from layerscope.inputs import CaffePreprocess, Preprocess
from layerscope.models._build import RANDOM_NOTE
from layerscope.models._registry import KerasTwin, ModelEntry, get_entry
from layerscope.models.keras_zoo.architecture import (
    RECIPE_BASE,
    RECIPE_HEAD,
    build_recipe,
    build_vgg16,
    init_random_,
    keras_module,
)
from layerscope.models.keras_zoo.weights import (
    load_model_file,
    load_weights,
    save_weights,
    torch_to_keras_weights,
    vgg16_imagenet_file,
)


def _twin(model: ModelEntry | str) -> tuple[str, KerasTwin]:
    entry = model if isinstance(model, ModelEntry) else get_entry(model)
    if entry.keras is None:
        raise UsageError(f"{entry.name} has no Keras twin (PyTorch only)")
    return entry.name, entry.keras


def builtin_info(model: ModelEntry | str, size: tuple[int, int] = (224, 224), warning: str | None = None) -> ModelInfo:
    """The facts of a Keras built-in model: class names, Caffe preprocessing at ``size``,
    probabilities (both end in a softmax), and the warning and frame note of its weights."""
    from layerscope.models.classes import UNTRAINED_HEAD, UNTRAINED_HEAD_NOTE

    name, twin = _twin(model)
    notes = {RANDOM_WEIGHTS: RANDOM_NOTE, UNTRAINED_HEAD: UNTRAINED_HEAD_NOTE}
    return ModelInfo(
        name=name,
        class_names=twin.class_names(),
        preprocess=CaffePreprocess(tuple(size)),
        output="probabilities",
        warning=warning,
        note=notes.get(warning) if warning else None,
    )


def load_builtin(
    model: ModelEntry | str,
    weights: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    size: tuple[int, int] = (224, 224),
    listing: bool = False,
) -> tuple[Any, ModelInfo]:
    """A Keras built-in model and its info (``listing``: the architecture with Keras' own
    initialisation, no weights read, for listing layers).

    Args:
        model: a built-in model with a Keras twin (its entry or its name):
            ``"vgg16-cifar10"`` (the recipe) or ``"vgg16"`` (ImageNet, 1000 classes).
        weights: ``None``/``"default"``/``"imagenet"`` (Keras' published file, from Keras'
            cache or downloaded once; offline, an error names the file to pass);
            ``"random"`` (seeded); or a path: a legacy ``.h5`` or Keras 3 ``.weights.h5``
            file of the whole model or of the VGG16 base alone, or a torch state dict
            (``.safetensors``/``.pth``) of layerscope's torch model of the same name
            (converted). A base alone leaves the recipe's head untrained (a warning says so).
        seed: the seed of random weights.
        size: the input size ``(H, W)`` (224 as in the recipe; VGG16 needs ≥ 32).
    """
    from layerscope.models.classes import UNTRAINED_HEAD

    name, twin = _twin(model)
    shape = (int(size[0]), int(size[1]), 3)
    w = "imagenet" if weights in (None, "default") else weights
    path: Path | None = None
    if listing:
        return twin.build(shape), builtin_info(name, size)
    if w == "imagenet":  # fetched (or failed) before anything is built
        path = vgg16_imagenet_file(include_top=twin.include_top)
    elif w != "random":
        path = Path(w)
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file")
    warning = None
    keras_model = twin.build(shape)
    if path is None:
        init_random_(keras_model, seed)
        warning = RANDOM_WEIGHTS
    elif twin.base is None:
        load_weights(keras_model, path)
    elif load_weights(keras_model, path, base=keras_model.get_layer(twin.base)) == "base":
        init_random_(twin.head(keras_model) if twin.head is not None else keras_model, seed)
        warning = UNTRAINED_HEAD
    return keras_model, builtin_info(name, size, warning)


def file_info(model: Any) -> ModelInfo:
    """The facts of a model from a ``.keras`` file: its own input size when the file fixes
    one (ImageNet normalisation, channels as the model wants them), nothing else known."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list) and len(shape) == 1:
        shape = shape[0]
    size = None
    if isinstance(shape, tuple) and len(shape) == 4:
        dims = shape[1:3] if shape[-1] in (1, 3) else shape[2:4]
        if all(isinstance(d, int) and d > 0 for d in dims):
            size = (int(dims[0]), int(dims[1]))
    return ModelInfo(preprocess=Preprocess(size) if size else None)


__all__ = [
    "RECIPE_BASE",
    "RECIPE_HEAD",
    "build_recipe",
    "build_vgg16",
    "builtin_info",
    "file_info",
    "init_random_",
    "keras_module",
    "load_builtin",
    "load_model_file",
    "load_weights",
    "save_weights",
    "torch_to_keras_weights",
    "vgg16_imagenet_file",
]
