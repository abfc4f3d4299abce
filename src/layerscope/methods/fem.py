"""FEM, the Feature Explanation Method: a gradient-free map from thresholded activations —
one forward pass for every layer, no backward."""

from __future__ import annotations

from typing import Any

from layerscope.methods._registry import Method, register
from layerscope.methods.gradient import weighted_sum


def fem(activations: Any, gradients: Any = None, k: float = 2.0) -> Any:
    """FEM (Fuad, Martin, Giot, Bourqui, Benois-Pineau & Zemmari, IPTA 2020, "Features
    understanding in 3D CNNs for actions recognition in video"), as pytorch-grad-cam's ``FEM``.

    Each channel keeps its unusually strong responses, by the ``k``-sigma rule over its
    positions, and is weighted by how many there are:
    ``μ_k = mean_ij A_k[i,j]``, ``σ_k = sqrt(mean_ij (A_k[i,j] − μ_k)²)`` (the population
    standard deviation), ``w_k = mean_ij [A_k[i,j] > μ_k + k·σ_k]`` and
    ``CAM = ReLU(Σ_k w_k A_k)``. A flat channel (``σ_k = 0``) gets weight 0. The map does not
    depend on the target class.

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ignored (``None``).
        k: the number of standard deviations above the mean a value must be.

    Returns:
        ``(N, h, w)`` map, non-negative.
    """
    mean = activations.mean(axis=(2, 3), keepdims=True)
    std = ((activations - mean) ** 2).mean(axis=(2, 3), keepdims=True) ** 0.5
    above = (activations > mean + k * std) * 1.0
    return weighted_sum(above.mean(axis=(2, 3)), activations)


register(
    Method(
        name="fem",
        title="FEM",
        fn=fem,
        summary="FEM: channels weighted by their share of values above mean + k·std, class-agnostic (Fuad et al. 2020)",
        needs=frozenset({"activations"}),
        cost="1 forward, all layers together (no backward)",
    )
)
