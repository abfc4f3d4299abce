"""Gradient-free CAM methods that need only the activations: one forward pass, no backward.

Such a map does not depend on the target class.
"""

from __future__ import annotations

from typing import Any

from layerscope.methods._registry import Method, register
from layerscope.methods.gradient import principal_map


def eigencam(activations: Any, gradients: Any = None, center: bool = True) -> Any:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, "Eigen-CAM: Class Activation Map using
    Principal Components").

    Each position ``(i, j)`` is a sample of the ``C`` channel values: ``M`` is the
    ``(h·w) × C`` matrix of ``A`` (centred per channel when ``center``, which makes ``v₁`` the
    first *principal component*), ``v₁`` its first right singular vector, and
    ``CAM = ReLU(±(M v₁))``. The sign of a singular vector is arbitrary; it is chosen so that
    the map correlates positively with the mean activation over channels, so the same input
    always gives the same map.

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ignored (``None``).
        center: subtract each channel's spatial mean before the decomposition.
    """
    return principal_map(activations, activations.mean(axis=1), center).clip(min=0)


register(
    Method(
        name="eigencam",
        title="Eigen-CAM",
        fn=eigencam,
        summary="Eigen-CAM: first principal component of the activations, class-agnostic (Muhammad & Yeasin 2020)",
        needs=frozenset({"activations"}),
        cost="1 forward, all layers together (no backward)",
    )
)
