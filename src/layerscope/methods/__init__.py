"""The registry of CAM methods.

A method is a small pure function of one layer's activations ``A`` and the gradients ``G``
of the target score with respect to them, both shaped ``(N, C, h, w)`` (channels first,
whatever the framework), returning the map after ReLU, shaped ``(N, h, w)``. The arrays may
be torch tensors or numpy arrays: methods use only operations both support (the few that
differ are in :mod:`layerscope.methods._ops`), so the work stays on the model's device.

A method's ``needs`` (one set over ``"activations"``, ``"gradients"``, ``"perturbation"``,
``"saliency"``, ``"attention"``, ``"layer_scores"``) tell the capture what to compute; its
``kind`` is that set in one word:

``"gradient"``
    ``fn(A, G)``: one forward and one backward pass for every layer at once.
``"activation"``
    ``fn(A, None)``: one forward pass, no gradients (Eigen-CAM).
``"perturbation"``
    ``fn(A, None, probe=...)``: the method re-runs the model on perturbed inputs or with the
    layer's output replaced, through a ``probe`` the capture hands it (see
    :class:`layerscope.capture.torch.Probe`); PyTorch only.
``"gradient"`` with the need ``"score"``
    ``fn(A, G)`` where ``G`` is the gradient of the method's own score of the output
    (``Method.score``, Finer-CAM); ``"hessian"``: ``fn(A, G, hvp=...)`` also gets the
    layer's Hessian–vector product from a double backward (ShapleyCAM); PyTorch only.
``"pixel"``
    ``fn(A, G, saliency=...)``: maps at the input's resolution that use guided
    backpropagation's input gradient (one more forward and backward); PyTorch only.
``"attention"``
    ``fn(A, G, extra=..., grid=...)`` once for all blocks: ``A`` the attention weights of every
    transformer block stacked ``(L, N, H, T, T)``, ``G`` their gradients (or ``None``); returns
    ``(L, N, h, w)``, one map per block (:mod:`layerscope.methods.attention`); PyTorch only.

Fusions across layers are a kind of their own (:mod:`layerscope.methods.fusion`): one map
from several layers' maps already captured, whatever the method, at no extra pass.
"""

from __future__ import annotations

from layerscope.methods._registry import (
    CONTEXT,
    NEEDS,
    ONE_PASS,
    CamFn,
    Method,
    get_method,
    list_methods,
    one_pass,
    register,
)
from layerscope.methods.fusion import Fusion, get_fusion, list_fusions, register_fusion

# Importing these registers their methods, in this order.
# isort: off
from layerscope.methods import gradient as _gradient  # noqa: F401
from layerscope.methods import activation as _activation  # noqa: F401
from layerscope.methods import perturbation as _perturbation  # noqa: F401
from layerscope.methods import guided as _guided  # noqa: F401
from layerscope.methods import finercam as _finercam  # noqa: F401
from layerscope.methods import shapleycam as _shapleycam  # noqa: F401
from layerscope.methods import kpcacam as _kpcacam  # noqa: F401
from layerscope.methods import fem as _fem  # noqa: F401
from layerscope.methods import attention as _attention  # noqa: F401
# isort: on

__all__ = [
    "CONTEXT",
    "NEEDS",
    "ONE_PASS",
    "CamFn",
    "Fusion",
    "Method",
    "get_fusion",
    "get_method",
    "list_fusions",
    "list_methods",
    "one_pass",
    "register",
    "register_fusion",
]
