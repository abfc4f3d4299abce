"""layerscope: see what every layer of a CNN looks at.

Grad-CAM and related class-activation maps at every layer of a PyTorch or Keras CNN in one
forward and one backward pass, rendered as an annotated animation.

``import layerscope`` is light: torch (or keras) is imported only when a model is explained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "LayerscopeError",
    "__version__",
    "explain",
    "get_method",
    "grid",
    "list_methods",
    "list_models",
    "load_model",
    "run_dataset",
]

_LAZY = {
    "explain": "layerscope.explanation",
    "Explanation": "layerscope.explanation",
    "grid": "layerscope.comparison",
    "list_methods": "layerscope.methods",
    "get_method": "layerscope.methods",
    "load_model": "layerscope.models",
    "list_models": "layerscope.models",
    "LayerscopeError": "layerscope.errors",
    "run_dataset": "layerscope.batch",
}

if TYPE_CHECKING:
    from layerscope.batch import run_dataset
    from layerscope.comparison import grid
    from layerscope.errors import LayerscopeError
    from layerscope.explanation import Explanation, explain
    from layerscope.methods import get_method, list_methods
    from layerscope.models import list_models, load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'layerscope' has no attribute {name!r}")
