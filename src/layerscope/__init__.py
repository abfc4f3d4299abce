"""layerscope: see what every layer of a network looks at.

Grad-CAM and related class-activation maps at every layer of a PyTorch or Keras 3 model (CNNs
and vision transformers) in one forward and one backward pass, shown as an annotated
animation, a video, an interactive page or arrays; for one image or a whole data set; with
per-layer faithfulness metrics (:mod:`layerscope.evaluate`).

``import layerscope`` is light: torch (or keras) is imported only when a model is explained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerscope._version import __version__

# Imported now, not lazily: the module ``layerscope.grid`` and its function ``grid`` share a
# name, and a lazy lookup would return the module once anything imported it (the import
# system sets the submodule as the package attribute). Light: numpy and Pillow only.
from layerscope.grid import explain_many, grid

__all__ = [
    "Explanation",
    "LayerscopeError",
    "ModelInfo",
    "RenderOptions",
    "__version__",
    "explain",
    "explain_many",
    "get_method",
    "grid",
    "list_methods",
    "list_models",
    "load_model",
    "model_info",
    "open_run",
    "rank_layers",
    "run_dataset",
    "targets",
]

_LAZY = {
    "explain": "layerscope.explanation",
    "Explanation": "layerscope.explanation",
    "ModelInfo": "layerscope.info",
    "model_info": "layerscope.info",
    "RenderOptions": "layerscope.render.options",
    "list_methods": "layerscope.methods",
    "get_method": "layerscope.methods",
    "load_model": "layerscope.models",
    "list_models": "layerscope.models",
    "LayerscopeError": "layerscope.errors",
    "run_dataset": "layerscope.batch",
    "rank_layers": "layerscope.evaluate",
    "open_run": "layerscope.batch",
    "targets": "layerscope.targets",
}

if TYPE_CHECKING:
    from layerscope.batch import open_run, run_dataset
    from layerscope.errors import LayerscopeError
    from layerscope.evaluate import rank_layers
    from layerscope.explanation import Explanation, explain
    from layerscope.info import ModelInfo, model_info
    from layerscope.methods import get_method, list_methods
    from layerscope.models import list_models, load_model
    from layerscope.render.options import RenderOptions


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        value = module if _LAZY[name] == f"layerscope.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'layerscope' has no attribute {name!r}")
