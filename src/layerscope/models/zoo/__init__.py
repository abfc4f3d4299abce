"""The built-in models' entries, one module per architecture (light: the torch and Keras
architectures are imported only when a model is built). Importing this package registers
them in :mod:`layerscope.models._registry`, in listing order."""

from __future__ import annotations

from layerscope.models._registry import register
from layerscope.models.zoo import demo, demo_detector, demo_vit, resnet, vgg

register(*demo.ENTRIES, *demo_vit.ENTRIES, *demo_detector.ENTRIES, *vgg.ENTRIES, *resnet.ENTRIES)

__all__ = ["demo", "demo_detector", "demo_vit", "resnet", "vgg"]
