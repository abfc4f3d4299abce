"""Gradient-based CAM methods: one forward and one backward pass for every layer.

Each works on ``A`` (activations) and ``G`` (gradients of the target score with respect to
``A``), both ``(N, C, h, w)``, torch tensors or numpy arrays.
"""

from __future__ import annotations

from typing import Any

from layerscope.methods import Method, register


def relu(x: Any) -> Any:
    """max(x, 0) for a torch tensor or a numpy array."""
    return x.clip(min=0)


def weighted_sum(weights: Any, activations: Any) -> Any:
    """ReLU(Σ_k w_k · A_k) for weights ``(N, C)`` (or ``(N, C, 1, 1)``) and ``A`` ``(N, C, h, w)``.

    The sum starts from zero (the recipe's ``cam = ones(...)`` start is a defect).
    """
    if weights.ndim == 2:
        weights = weights[:, :, None, None]
    return relu((weights * activations).sum(axis=1))


def gradcam(activations: Any, gradients: Any, guided_grads: bool = False) -> Any:
    """Grad-CAM (Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from Deep Networks
    via Gradient-based Localization").

    ``w_k = 1/(h·w) Σ_ij ∂y/∂A_k[i,j]`` and ``CAM = ReLU(Σ_k w_k A_k)``.

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ``∂y/∂A``, same shape.
        guided_grads: the notebook recipe's variant: before averaging, keep a gradient only
            where it is positive *and* the activation is positive
            (``G · [G > 0] · [A > 0]``), then average as above.

    Returns:
        ``(N, h, w)`` map, non-negative.
    """
    if guided_grads:
        gradients = gradients * (gradients > 0) * (activations > 0)
    weights = gradients.mean(axis=(2, 3))
    return weighted_sum(weights, activations)


register(
    Method(
        name="gradcam",
        title="Grad-CAM",
        fn=gradcam,
        summary="Grad-CAM: channel weights = spatial mean of the gradients (Selvaraju et al. 2017)",
        options={"guided_grads": False},
    )
)
