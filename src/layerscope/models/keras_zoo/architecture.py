"""The Keras 3 architectures: VGG16 and the notebook recipe, and their seeded random weights.

The recipe: ``keras.applications.VGG16(include_top=False)`` nested in a model that adds
``GlobalAveragePooling2D``, ``Dense(1024, relu)`` and ``Dense(10, softmax)``; inputs are
RGB images passed through ``vgg16.preprocess_input`` ("caffe" style: RGB → BGR, then the
ImageNet channel means subtracted; :class:`layerscope.inputs.CaffePreprocess`).

Everything here runs on any Keras backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The recipe's layer names (the base is nested under ``vgg16``).
RECIPE_BASE = "vgg16"
RECIPE_HEAD = ("global_average_pooling2d", "dense", "predictions")


def keras_module() -> Any:
    """``keras``, imported on first use (Keras 3 only): the capture's one check, which says
    whether Keras or only its backend is missing and how to choose another backend."""
    from layerscope.capture.keras import keras_module as _keras

    return _keras()


def build_vgg16(input_shape: tuple[int, int, int] = (224, 224, 3), include_top: bool = True) -> Any:
    """``keras.applications.VGG16`` without weights (Keras' own random initialisation)."""
    keras = keras_module()
    return keras.applications.VGG16(include_top=include_top, weights=None, input_shape=input_shape)


def build_recipe(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    classes: int = 10,
    hidden: int = 1024,
    base: Any = None,
) -> Any:
    """The recipe's architecture: VGG16 base (nested, named ``vgg16``) + GAP + Dense + Dense.

    Args:
        input_shape: ``(H, W, 3)``; VGG16 needs at least 32×32.
        classes: outputs of the softmax layer.
        hidden: units of the ReLU layer.
        base: the VGG16 base to use (default: a new one without weights).
    """
    keras = keras_module()
    from keras import layers

    if base is None:
        base = build_vgg16(input_shape, include_top=False)
    inputs = keras.Input(input_shape, name="input_layer")
    x = base(inputs)
    x = layers.GlobalAveragePooling2D(name=RECIPE_HEAD[0])(x)
    x = layers.Dense(hidden, activation="relu", name=RECIPE_HEAD[1])(x)
    outputs = layers.Dense(classes, activation="softmax", name=RECIPE_HEAD[2])(x)
    return keras.Model(inputs, outputs, name="vgg16_cifar10")


class HeadView:
    """Some layers of a model seen as one container (the recipe's head, for :func:`init_random_`)."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers


def recipe_head(model: Any) -> HeadView:
    """The recipe's head layers (GAP, Dense, Dense)."""
    return HeadView([model.get_layer(n) for n in RECIPE_HEAD])


def leaves(model: Any) -> list[tuple[str, Any]]:
    """Layers with their own weights and no sub-layers, in forward order."""
    from layerscope.capture.keras import _children

    out: list[tuple[str, Any]] = []

    def visit(layer: Any, prefix: str) -> None:
        kids = layer.layers if isinstance(layer, HeadView) else _children(layer)
        for child in kids:
            path = f"{prefix}/{child.name}" if prefix else child.name
            if _children(child):
                visit(child, path)
            elif child.weights:
                out.append((path, child))

    visit(model, "")
    return out


def init_random_(model: Any, seed: int = 0) -> None:
    """Seeded weights the same on every backend: He-normal convolutions (fan-out, as torch's
    VGG), N(0, 0.01) dense kernels, zero biases."""
    rng = np.random.default_rng(seed)
    kl = keras_module().layers
    for _, layer in leaves(model):
        if isinstance(layer, kl.Conv2D):
            k = layer.kernel
            kh, kw, _, cout = k.shape
            kernel = rng.normal(0.0, (2.0 / (kh * kw * cout)) ** 0.5, size=k.shape)
        elif isinstance(layer, kl.Dense):
            kernel = rng.normal(0.0, 0.01, size=layer.kernel.shape)
        else:
            continue
        values = [kernel.astype(np.float32)]
        if layer.bias is not None:
            values.append(np.zeros(layer.bias.shape, np.float32))
        layer.set_weights(values)
