"""Test helper: Keras weights back to a torch state dict (the inverse of
:func:`layerscope.models.keras_zoo.torch_to_keras_weights`), used only to check the conversion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerscope.capture.keras import walk
from layerscope.errors import WeightsError
from layerscope.models.keras_zoo.architecture import keras_module
from layerscope.models.keras_zoo.architecture import leaves as weighted_leaves


def keras_to_torch_weights(model: Any, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The inverse of :func:`torch_to_keras_weights`: the Keras model's weights as a torch
    state dict with the given parameter ``keys`` (e.g. ``torch_model.state_dict().keys()``),
    paired in order. Kernels go from HWIO to OIHW."""
    kl = keras_module().layers
    mods = [k[: -len(".weight")] for k in keys if k.endswith(".weight")]
    leaves = [layer for _, layer in weighted_leaves(model)]
    if len(mods) != len(leaves):
        raise WeightsError(f"{len(mods)} torch modules with weights, {len(leaves)} Keras layers with weights")
    order = [layer for _, layer in walk(model)]
    out: dict[str, np.ndarray] = {}
    channels = None
    for mod, layer in zip(mods, leaves, strict=True):
        arrays = layer.get_weights()
        if isinstance(layer, kl.Conv2D):
            w = arrays[0].transpose(3, 2, 0, 1)
            channels = w.shape[0]
        elif isinstance(layer, kl.Dense):
            w = arrays[0].T
            i = order.index(layer)
            if i > 0 and isinstance(order[i - 1], kl.Flatten) and channels and w.shape[1] % channels == 0:
                hw = w.shape[1] // channels
                if hw > 1:
                    w = w.reshape(w.shape[0], hw, channels).transpose(0, 2, 1).reshape(w.shape[0], -1)
        else:
            raise WeightsError(f"layer {layer.name}: {type(layer).__name__} has no torch counterpart here")
        out[f"{mod}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
        if len(arrays) > 1:
            out[f"{mod}.bias"] = np.asarray(arrays[1], dtype=np.float32)
    return out
