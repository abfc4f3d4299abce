"""ShapleyCAM: channel weights from the gradient and the Hessian–vector product — one
forward, one backward and one double backward for every layer together."""

from __future__ import annotations

from typing import Any

from layerscope.methods._registry import Method, register
from layerscope.methods.gradient import weighted_sum


def shapleycam(activations: Any, gradients: Any, *, hvp: Any) -> Any:
    """ShapleyCAM (Cai, 2025, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261).

    The channel weights are the first- and second-order terms of the Taylor approximation of
    the channels' Shapley values: with ``g = ∂y/∂A`` and the layer's Hessian–vector product
    ``H A = (∂²y/∂A²) · A`` (the Hessian of the score with respect to this layer's output),
    ``w_k = 1/(h·w) Σ_ij (g − ½·H A)_k[i,j]`` and ``CAM = ReLU(Σ_k w_k A_k)``.

    ``H A`` comes from a double backward (the capture hands it over as ``hvp``). For a
    network that is piecewise linear after the layer (ReLU, max-pooling, convolutions and
    linear layers) and a logit score, ``H = 0`` and the map is Grad-CAM's; the second-order
    term matters for a probability output (softmax) and for smooth activations (GELU, SiLU).
    The paper pairs ShapleyCAM with its ReST score (``y_c`` minus the cross-entropy); give it
    as a callable target to explain that score. pytorch-grad-cam 1.5.7's ``ShapleyCAM``
    computes the same weights, one Hessian–vector product per layer.

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ``∂y/∂A``, same shape.
        hvp: ``H A``, same shape.

    Returns:
        ``(N, h, w)`` map, non-negative.
    """
    return weighted_sum((gradients - 0.5 * hvp).mean(axis=(2, 3)), activations)


register(
    Method(
        name="shapleycam",
        title="ShapleyCAM",
        fn=shapleycam,
        summary="ShapleyCAM: gradient minus half the Hessian–vector product as channel weights (Cai 2025)",
        needs=frozenset({"activations", "gradients", "hessian"}),
        cost="1 forward + 1 backward (create_graph) + 1 double backward batched over the layers, all layers together",
    )
)
