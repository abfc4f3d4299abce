"""The registry of CAM methods.

A method is a small pure function of one layer's activations ``A`` and the gradients ``G``
of the target score with respect to them, both shaped ``(N, C, h, w)`` (channels first,
whatever the framework), returning the map after ReLU, shaped ``(N, h, w)``. The arrays may
be torch tensors or numpy arrays: methods use only operations both support, so the work
stays on the model's device.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from layerscope.errors import UsageError

CamFn = Callable[..., Any]


@dataclass(frozen=True)
class Method:
    """A registered CAM method.

    Attributes:
        name: registry name, as given to ``explain(method=...)`` and ``--method``.
        title: display name for captions, e.g. "Grad-CAM".
        fn: ``fn(activations, gradients, **options) -> cam``.
        summary: one line for ``layerscope methods``.
        needs_gradients: whether the capture must run a backward pass.
        extra_forwards: forward passes beyond the first, per image and layer ("0" for the
            one-pass methods; perturbation methods say what they cost).
        options: the keyword options ``fn`` accepts, with their defaults.
    """

    name: str
    title: str
    fn: CamFn
    summary: str
    needs_gradients: bool = True
    extra_forwards: str = "0"
    options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (an existing name is an error)."""
    if method.name in _REGISTRY:
        raise ValueError(f"CAM method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def list_methods() -> list[str]:
    """Names of the registered CAM methods, in registration order."""
    return list(_REGISTRY)


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown CAM method {name!r}.{hint} Valid methods: {', '.join(_REGISTRY)}") from None


from layerscope.methods import gradient as _gradient  # noqa: E402,F401  (registers methods)
