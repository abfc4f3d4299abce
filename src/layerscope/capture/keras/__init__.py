"""Keras 3 capture: :class:`KerasAdapter`, the :class:`~layerscope.capture.Adapter` for
``keras.Model`` models on the torch, TensorFlow or JAX backend, split along its seams:

* :mod:`~layerscope.capture.keras.taps`: the layers (a walk through nested models, names,
  default layers) and the taps that keep each chosen layer's output;
* :mod:`~layerscope.capture.keras.device_arrays`: TensorFlow / JAX tensors seen through
  numpy-style methods, so the maps are computed on the device;
* :mod:`~layerscope.capture.keras.model_io`: the input layout, the output, the targets;
* :mod:`~layerscope.capture.keras.backends`: importing Keras, precision, and the run on
  each backend;
* :mod:`~layerscope.capture.keras.adapter`: the adapter.
"""

from __future__ import annotations

from layerscope.capture.keras._module import keras_module
from layerscope.capture.keras.adapter import KerasAdapter
from layerscope.capture.keras.backends import run
from layerscope.capture.keras.device_arrays import DeviceArray
from layerscope.capture.keras.model_io import model_input
from layerscope.capture.keras.taps import _children, default_layers, is_conv, layer_names, resolve_layers, walk

__all__ = [
    "DeviceArray",
    "KerasAdapter",
    "_children",
    "default_layers",
    "is_conv",
    "keras_module",
    "layer_names",
    "model_input",
    "resolve_layers",
    "run",
    "walk",
]
