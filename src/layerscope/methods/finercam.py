"""Finer-CAM: Grad-CAM of the difference between the target class and its most similar
classes — one forward and one backward pass for every layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.methods._ops import argsort, index, softmax, take_along
from layerscope.methods._registry import Method, register
from layerscope.methods.gradient import gradcam

WEIGHTINGS = ("equal", "probability")


def finercam(
    activations: Any,
    gradients: Any,
    gamma: float = 1.0,
    comparison: int | Sequence[int] = 3,
    weighting: str = "equal",
) -> Any:
    """Finer-CAM (Zhang, Gu, Chowdhury, Mai, Carlyn, Berger-Wolf, Su & Chao, CVPR 2025,
    "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation").

    Grad-CAM of the score ``s = y_c − γ · (1/|D|) Σ_{d∈D} y_d`` instead of ``y_c``:
    ``w_k = 1/(h·w) Σ_ij ∂s/∂A_k[i,j]``, ``CAM = ReLU(Σ_k w_k A_k)``. ``D`` are the classes
    most similar to the target ``c``: those whose logits are closest to ``y_c`` (for a
    top-1 target, the next-highest logits). Features shared with the similar classes cancel;
    what tells ``c`` apart from them stays. ``γ = 0`` is Grad-CAM; ``γ = 1`` (the paper's
    full comparison) the plain difference. The gradient is that of the score made by
    :func:`finer_score` (the capture differentiates it instead of ``y_c``), so this function
    is Grad-CAM itself.

    Conventions: with several references the paper's code averages the pairwise differences
    ``y_c − γ·y_d`` with equal weights (``weighting="equal"``, the default, also the
    authors' ``FinerDefaultTarget``). pytorch-grad-cam 1.5.7's ``FinerCAM`` weights them by
    the softmax probabilities of the compared classes, ``Σ_d p_d (y_c − γ·y_d) / Σ_d p_d``,
    and differentiates through those weights as well (``weighting="probability"``
    reproduces it); its ``alpha`` is ``γ``, its default comparison the 3 closest classes.

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ``∂s/∂A``, same shape.
        gamma: ``γ``, the comparison strength (``0``: Grad-CAM of ``y_c``).
        comparison: how many of the most similar classes to compare with (at most
            ``K − 1``), or an explicit list of class indices (the same for every image).
        weighting: ``"equal"`` (the mean of the compared logits) or ``"probability"``
            (pytorch-grad-cam's softmax-weighted mean).

    Returns:
        ``(N, h, w)`` map, non-negative.
    """
    return gradcam(activations, gradients)


def finer_score(outputs: Any, targets: Any, *, gamma: float, comparison: int | Sequence[int], weighting: str) -> Any:
    """The ``(N,)`` scores Finer-CAM explains: ``y_c − γ·mean_d y_d`` per image (see
    :func:`finercam`), from the ``(N, K)`` output and the ``(N,)`` target classes."""
    n, k = (int(s) for s in outputs.shape)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)):
        raise UsageError(f"finercam's gamma must be a number, not {gamma!r}")
    if weighting not in WEIGHTINGS:
        raise UsageError(f"finercam's weighting must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}")
    t = targets.reshape(n, 1)
    yc = take_along(outputs, t)
    if isinstance(comparison, (int, np.integer)) and not isinstance(comparison, bool):
        if comparison < 1:
            raise UsageError(f"finercam's comparison must be at least 1 class, not {comparison}")
        if k < 2:
            raise UsageError("finercam compares the target with other classes; this model has only 1 class")
        m = min(int(comparison), k - 1)
        dist = abs(outputs - yc)
        own = (index(outputs, np.arange(k))[None, :] == t) * 1.0
        dist = dist + own * (dist.max() + 1)  # the target itself sorts last
        chosen = argsort(dist)[:, :m]
    else:
        given = _class_list(comparison, k)
        chosen = index(outputs, np.tile(np.asarray(given, dtype=np.int64), (n, 1)))
    yd = take_along(outputs, chosen)
    pairs = yc - gamma * yd
    if weighting == "equal":
        return pairs.mean(axis=1)
    p = take_along(softmax(outputs, axis=1), chosen)
    return (p * pairs).sum(axis=1) / (p.sum(axis=1) + 1e-9)


def _class_list(comparison: Any, k: int) -> list[int]:
    try:
        items = list(comparison)
    except TypeError:
        raise UsageError(
            f"finercam's comparison must be a number of classes or a list of classes, not {comparison!r}"
        ) from None
    if not items or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < k for c in items):
        raise UsageError(f"finercam's comparison classes must be class indices in [0, {k}), not {comparison!r}")
    return [int(c) for c in items]


register(
    Method(
        name="finercam",
        title="Finer-CAM",
        fn=finercam,
        summary="Finer-CAM: Grad-CAM of y_c − γ·y_d against the most similar classes (Zhang et al. 2025)",
        score=finer_score,
    )
)
