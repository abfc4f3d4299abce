"""KPCA-CAM: the first kernel principal component of the activations — one forward pass
for every layer, no backward."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.methods._ops import (
    as_float64,
    concat,
    exp,
    finite_items,
    index,
    is_torch,
    nan_to_zero,
    nan_where,
    sign,
    tanh,
    top_eigenpair,
)
from layerscope.methods._registry import Method, register

KERNELS = ("rbf", "sigmoid", "poly", "linear")
_CHUNK = 8192  # positions whose kernel row block is made at once (bounds the memory)


def kpcacam(
    activations: Any,
    gradients: Any = None,
    kernel: str = "rbf",
    gamma: float | None = None,
    max_positions: int | None = 1024,
) -> Any:
    """KPCA-CAM (Karmani, Sivakaran, Prasad, Ali, Yang & Tang, 2024, "KPCA-CAM: Visual
    Explainability of Deep Computer Vision Models using Kernel-based Principal Component
    Analysis", arXiv:2410.00267): Eigen-CAM with kernel PCA in place of PCA.

    Each position ``(i, j)`` is a sample ``x`` of the ``C`` channel values, centred per channel
    over the positions. With the kernel ``κ`` (``rbf``: ``exp(−γ‖x − x'‖²)``, ``sigmoid``:
    ``tanh(γ x·x' + 1)``, ``poly``: ``(γ x·x' + 1)³``, ``linear``: ``x·x'``; ``γ = 1/C`` by
    default, as scikit-learn's ``KernelPCA``), ``K = [κ(x_p, x_q)]`` is centred in feature
    space, ``K̃ = K − 1K − K1 + 1K1`` (``1`` the ``P × P`` matrix of ``1/P``), ``α`` is its
    top eigenvector and the map is each position's first kernel principal component,
    ``CAM[p] = ReLU(±(K̃ α)[p])``. As for Eigen-CAM, the sign is chosen so the map correlates
    positively with the mean activation over channels (the same input always gives the same
    map); the map does not depend on the target class.

    ``K`` is ``P × P`` for ``P = h·w`` positions (50,176 for VGG16's first layer at 224×224),
    so when ``P > max_positions`` the component is fitted on a regular grid of at most
    ``max_positions`` positions (every ``s``-th row and column) and every position is
    projected onto it (kernel PCA's out-of-sample projection, scikit-learn's
    ``KernelPCA.transform``); the map keeps the layer's full resolution. Layers with at most
    ``max_positions`` positions (and ``max_positions=None``) get the exact decomposition.

    Conventions: pytorch-grad-cam 1.5.7's ``KPCA_CAM`` defaults to ``kernel="sigmoid"`` (the
    paper and this function use the RBF kernel by default; pass ``kernel="sigmoid"`` for
    theirs), always decomposes the full ``P × P`` matrix, and keeps scikit-learn's sign
    (the largest-magnitude entry of the eigenvector positive), which is unrelated to the image:
    8 of a random VGG16's 13 layers came out inverted before ReLU
    (``benchmarks/pgc_new_methods.py``; with the sign aligned they agree to 2e-4).

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ignored (``None``).
        kernel: one of ``"rbf"``, ``"sigmoid"``, ``"poly"``, ``"linear"``.
        gamma: the kernel's ``γ``; ``None``: ``1/C``.
        max_positions: the most positions the component is fitted on (``None``: all).

    Returns:
        ``(N, h, w)`` map, non-negative.
    """
    if kernel not in KERNELS:
        raise UsageError(f"kpcacam's kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
    if max_positions is not None and (isinstance(max_positions, bool) or int(max_positions) < 1):
        raise UsageError(f"kpcacam's max_positions must be a positive number or None, not {max_positions!r}")
    n, c, h, w = (int(s) for s in activations.shape)
    finite = finite_items(activations)
    a = nan_to_zero(as_float64(activations))
    g = 1.0 / c if gamma is None else float(gamma)
    x = a.reshape(n, c, h * w).swapaxes(1, 2)
    x = x - x.mean(axis=1, keepdims=True)
    fit = x[:, index(x, _grid(h, w, max_positions)), :]
    k_fit = _kernel(fit, fit, kernel, g)
    col = k_fit.mean(axis=1)  # (N, m): the mean kernel value of each fitted position
    total = col.mean(axis=1)
    _, alpha = top_eigenpair(k_fit - col[:, None, :] - col[:, :, None] + total[:, None, None])
    parts = []
    for at in range(0, h * w, _CHUNK):
        k_all = _kernel(x[:, at : at + _CHUNK, :], fit, kernel, g)
        k_all = k_all - col[:, None, :] - k_all.mean(axis=2, keepdims=True) + total[:, None, None]
        parts.append((k_all @ alpha[:, :, None])[:, :, 0])
    proj = concat(parts, axis=1)
    ref = a.mean(axis=1).reshape(n, h * w)
    ref = ref - ref.mean(axis=1, keepdims=True)
    p0 = proj - proj.mean(axis=1, keepdims=True)
    out = (proj * sign((p0 * ref).sum(axis=1))[:, None]).reshape(n, h, w).clip(min=0)
    out = out.to(activations.dtype) if is_torch(out) else out.astype(np.float32)
    # An item with NaN/inf values gets a NaN map: the capture zeroes it and warns.
    return out + nan_where(~finite, out)[:, None, None]


def _grid(h: int, w: int, most: int | None) -> np.ndarray:
    """The raster indices of every ``s``-th row and column, the smallest ``s`` giving at most
    ``most`` positions (``s = 1``: all of them)."""
    s = 1 if most is None or h * w <= most else max(1, math.ceil(math.sqrt(h * w / most)))
    while most is not None and -(-h // s) * -(-w // s) > most:
        s += 1
    rows, cols = np.meshgrid(np.arange(0, h, s), np.arange(0, w, s), indexing="ij")
    return (rows * w + cols).reshape(-1)


def _kernel(u: Any, v: Any, kernel: str, gamma: float) -> Any:
    """``κ(u_p, v_q)`` for ``u`` ``(N, P, C)`` and ``v`` ``(N, M, C)``: ``(N, P, M)``."""
    dot = u @ v.swapaxes(1, 2)
    if kernel == "linear":
        return dot
    if kernel == "sigmoid":
        return tanh(gamma * dot + 1.0)
    if kernel == "poly":
        return (gamma * dot + 1.0) ** 3
    sq = (u * u).sum(axis=2)[:, :, None] + (v * v).sum(axis=2)[:, None, :] - 2.0 * dot
    return exp(-gamma * sq.clip(min=0))


register(
    Method(
        name="kpcacam",
        title="KPCA-CAM",
        fn=kpcacam,
        summary="KPCA-CAM: first kernel principal component of the activations, class-agnostic (Karmani et al. 2024)",
        needs=frozenset({"activations"}),
        cost="1 forward, all layers together (no backward); a kernel eigenproblem per layer",
    )
)
