"""Capture adapters: run a model once and hand each chosen layer's activation and gradient
to the method's map function.

One class per framework implements the :class:`Adapter` protocol (``TorchAdapter`` in
:mod:`layerscope.capture.torch`, ``KerasAdapter`` in :mod:`layerscope.capture.keras`),
registered in :mod:`layerscope.capture._registry` with a detector; :func:`adapter_for` /
:func:`get_adapter` return an instance, importing the framework only then. Besides
placement (``resolve_device``, ``placed``, ``move``, ``accelerators``) and what it
``supports`` (:class:`Supports`), each has:

``resolve_layers(model, spec, info) -> list[tuple[str, str]]``
    ``(display name, framework path)`` pairs for the requested layers (``None`` = the
    default layers: the info's friendly names, else every conv layer; names, glob patterns,
    or a list of them). Unknown names raise :class:`~layerscope.errors.UsageError` listing
    close matches.

``layer_shapes(model, size, info, every_module=False, run_model=None) -> list[LayerShape]``
    every default layer (or every leaf module/layer) with its real per-image output shape
    for an input of ``size`` = ``(height, width)``: what ``layerscope layers`` prints
    (``run_model(model, x)``: how to run a model that takes more than pixels, torch only).

``run(model, x, layers, targets, request) -> CaptureResult``
    what the :class:`CaptureRequest` asks for: one forward pass, then (for gradient
    methods) one backward pass of the target scores with respect to the captured
    activations only; ``request.fn(A, G, **context)`` gets channels-first ``(N, C, h, w)``
    arrays as soon as a layer's gradient is known and returns its ``(N, h, w)`` map.
"""

from layerscope.capture._layers import match_layers
from layerscope.capture._registry import (
    adapter_for,
    detect_framework,
    frameworks,
    get_adapter,
    module_root_is,
    register_adapter,
)
from layerscope.capture._request import (
    NEEDS,
    PRECISIONS,
    Adapter,
    CaptureRequest,
    CaptureResult,
    LayerShape,
    Supports,
    as_needs,
)
from layerscope.capture._support import check_supported, served_by
from layerscope.capture._targets import given_targets

__all__ = [
    "NEEDS",
    "PRECISIONS",
    "Adapter",
    "CaptureRequest",
    "CaptureResult",
    "LayerShape",
    "Supports",
    "adapter_for",
    "as_needs",
    "check_supported",
    "detect_framework",
    "frameworks",
    "get_adapter",
    "given_targets",
    "match_layers",
    "register_adapter",
    "served_by",
]

register_adapter("torch", detect=module_root_is("torch"), load="layerscope.capture.torch:TorchAdapter")
register_adapter("keras", detect=module_root_is("keras", "tf_keras"), load="layerscope.capture.keras:KerasAdapter")
