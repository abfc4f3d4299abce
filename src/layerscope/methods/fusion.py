"""Fusion across layers: one map made from several layers' maps already captured (no extra
pass), as a small registry of its own (:class:`Fusion`, :func:`register_fusion`,
:func:`get_fusion`, :func:`list_fusions`).

A fusion function is ``fn(maps, size, **options) -> (N, H, W)``: ``maps`` the per-layer maps
``(N, h, w)`` in forward order (numpy, any sizes), ``size`` the output ``(H, W)`` (the largest
map's by default, as torchcam's ``fuse_cams``); its options and defaults are read from its
signature. Every resize is :func:`layerscope.resize.resize_bilinear` (half-pixel centres,
torch's ``align_corners=False``). The maps may come from any method, perturbation methods
included: a fusion only reads them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.errors import UsageError, unknown_name
from layerscope.resize import resize_bilinear

#: The ε of the per-image min–max normalisation (torchcam's ``_CAM._normalize``).
EPS = 1e-8

FuseFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Fusion:
    """A registered fusion across layers.

    Attributes:
        name: registry name, as given to ``Explanation.fused(method=...)`` and ``--fuse``.
        title: display name for captions, e.g. "LayerCAM fusion".
        fn: ``fn(maps, size, **options) -> (N, H, W)`` float array; its keyword parameters
            after the first two, with their defaults, are the options (:attr:`options`).
        summary: one line for ``layerscope methods``.
        select: ``select(sizes) -> indices``: which of the maps (given their ``(h, w)`` in
            forward order) the fusion uses; ``None``: all of them.
        cost: what it costs, for ``layerscope methods``.
    """

    name: str
    title: str
    fn: FuseFn
    summary: str
    select: Callable[[Sequence[tuple[int, int]]], list[int]] | None = None
    cost: str = "no extra pass: from the maps already captured"

    @property
    def options(self) -> dict[str, Any]:
        """The fusion's options and their defaults, read from ``fn``'s signature."""
        params = list(inspect.signature(self.fn).parameters.values())[2:]
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    def chosen(self, sizes: Sequence[tuple[int, int]]) -> list[int]:
        """The indices of the maps the fusion uses, from their sizes (forward order)."""
        return list(range(len(sizes))) if self.select is None else self.select(sizes)


_FUSIONS: dict[str, Fusion] = {}


def register_fusion(fusion: Fusion) -> Fusion:
    """Add a fusion to the registry (an existing name is an error)."""
    if fusion.name in _FUSIONS:
        raise ValueError(f"fusion {fusion.name!r} is already registered")
    _FUSIONS[fusion.name] = fusion
    return fusion


def list_fusions() -> list[str]:
    """Names of the registered fusions, in registration order."""
    return list(_FUSIONS)


def get_fusion(name: str) -> Fusion:
    """The fusion called ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return _FUSIONS[name]
    except KeyError:
        raise UsageError(unknown_name("fusion", name, _FUSIONS, n=3, valid="Valid fusions")) from None


def largest_size(maps: Sequence[Any]) -> tuple[int, int]:
    """The largest height and the largest width among the maps (torchcam's default target)."""
    return max(int(np.shape(m)[-2]) for m in maps), max(int(np.shape(m)[-1]) for m in maps)


def minmax(cams: np.ndarray) -> np.ndarray:
    """Each image's map to [0, 1]: ``(m − min) / (max − min + ε)`` (torchcam's; a flat map is 0)."""
    a = np.asarray(cams, np.float64)
    a = a - a.min(axis=(-2, -1), keepdims=True)
    return a / (a.max(axis=(-2, -1), keepdims=True) + EPS)


def layercam_fusion(maps: Sequence[np.ndarray], size: tuple[int, int], gamma: float = 2.0) -> np.ndarray:
    """LayerCAM's fusion of several layers (Jiang et al. 2021, "LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization", IEEE TIP, eq. 9).

    Each layer's map is scaled at its own size, ``M̂_l = tanh(γ · norm(M_l))`` — the paper's
    ``tanh(γ · M / max M)``, with the min–max normalisation torchcam applies (the two agree
    when a map's minimum is 0) —, enlarged to ``size``, and the layers fused by the
    element-wise maximum: ``F = max_l up(M̂_l)``. ``γ = 2`` is the paper's. Equals torchcam's
    ``LayerCAM.fuse_cams`` on normalised maps.
    """
    if gamma <= 0:
        raise UsageError(f"layercam-fusion's gamma must be positive, not {gamma!r}")
    out = None
    for m in maps:
        scaled = resize_bilinear(np.tanh(gamma * minmax(m)), size)
        out = scaled if out is None else np.maximum(out, scaled)
    return np.asarray(out)


def refinecam(maps: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """RefineCAM (2026, "How to Evaluate and Refine your CAM", arXiv:2605.14641; torchcam
    0.5's and pytorch-grad-cam 1.5.7's ``RefineCAM``): the product of the normalised
    per-layer maps, enlarged to one size, normalised again: ``F = norm(Π_l up(norm(M_l)))``.

    A region survives only where every layer agrees: it denoises the sharp but noisy shallow
    maps with the coarse, class-specific deep ones (and one flat layer makes it flat).
    torchcam enlarges to the largest map (as here), pytorch-grad-cam to the input image.
    """
    out = None
    for m in maps:
        scaled = resize_bilinear(minmax(m), size)
        out = scaled if out is None else out * scaled
    return minmax(np.asarray(out))


def _deepest_of_each_size(sizes: Sequence[tuple[int, int]]) -> list[int]:
    """From the deepest layer back, each layer whose map is larger than the last one kept:
    the deepest layer of each resolution (Poly-CAM's targets, the last conv of each block)."""
    kept: list[int] = []
    for i in reversed(range(len(sizes))):
        h, w = sizes[i]
        if not kept or (h * w > sizes[kept[-1]][0] * sizes[kept[-1]][1] and (h, w) != sizes[kept[-1]]):
            kept.append(i)
    return kept[::-1]


def _lnorm(a: np.ndarray, coarse: tuple[int, int]) -> np.ndarray:
    """Poly-CAM's local relevance normalisation: ``a`` divided by its mean over the patch
    that one pixel of the coarser map covers (shrunk to ``coarse`` and enlarged back)."""
    local = resize_bilinear(resize_bilinear(a, coarse), a.shape[-2:])
    return a / np.maximum(local, 1e-12)


def polycam(maps: Sequence[np.ndarray], size: tuple[int, int], outlier: float = 0.1) -> np.ndarray:
    """Poly-CAM's recursive fusion (Englebert, Cornu, De Vleeschouwer 2022, "Poly-CAM: High
    resolution class activation map for convolutional neural networks", arXiv:2204.13359).

    From the deepest layer ``L`` to the shallowest, one layer per resolution (the deepest of
    each size, the paper's targets: :attr:`Fusion.select`)::

        P_L = M_L
        P_l = ReLU( M_l / up(down(M_l)) ⊙ up(P_{l+1}) )

    where ``M_l / up(down(M_l))`` is the local relevance normalisation (LNorm: each pixel over
    its patch's mean at the coarser resolution of ``P_{l+1}``); then the shallowest ``P``
    normalised to [0, 1] between its ``outlier`` and ``100 − outlier`` percentiles (0.1 %,
    the paper's) and enlarged to ``size``. The paper's per-layer maps are its own (PCAM±);
    here they are the explained method's.
    """
    if not 0 <= outlier < 50:
        raise UsageError(f"polycam's outlier must be a percentage in [0, 50), not {outlier!r}")
    prev = None
    for m in reversed(maps):
        a = np.maximum(np.asarray(m, np.float64), 0.0)
        if prev is None:
            prev = a
            continue
        a = _lnorm(a, prev.shape[-2:])
        prev = np.maximum(a * resize_bilinear(prev, a.shape[-2:]), 0.0)
    assert prev is not None
    flat = prev.reshape(prev.shape[0], -1)
    lo = np.percentile(flat, outlier, axis=1)[:, None, None]
    hi = np.percentile(flat, 100 - outlier, axis=1)[:, None, None]
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    out = np.clip((prev - lo) / span, 0.0, 1.0) * (hi - lo > 0)
    return resize_bilinear(out, size)


def fuse(name: str, maps: Sequence[np.ndarray], size: tuple[int, int] | None = None, **options: Any) -> np.ndarray:
    """Fuse ``maps`` (``(N, h, w)`` each, forward order) with the fusion called ``name``:
    the options checked, the fusion's :attr:`~Fusion.select` applied, at least two maps.

    Returns:
        float32 ``(N, H, W)``, at ``size`` (default: the largest map's height and width).
    """
    f = get_fusion(name)
    unknown = set(options) - set(f.options)
    if unknown:
        valid = ", ".join(f.options) or "none"
        raise UsageError(f"fusion {name!r} has no option {', '.join(sorted(unknown))}; its options: {valid}")
    used = [maps[i] for i in f.chosen([tuple(np.shape(m)[-2:]) for m in maps])]
    if len(used) < 2:
        why = " of different sizes" if f.select is not None and len(maps) >= 2 else ""
        raise UsageError(f"fusion {name!r} needs the maps of at least 2 layers{why}; got {len(used)}")
    target = largest_size(maps) if size is None else (int(size[0]), int(size[1]))
    return np.asarray(f.fn(used, target, **{**f.options, **options}), np.float32)


register_fusion(
    Fusion(
        "layercam-fusion",
        "LayerCAM fusion",
        layercam_fusion,
        "LayerCAM's fusion: tanh-scaled maps, element-wise max (Jiang et al. 2021)",
    )
)
register_fusion(
    Fusion(
        "refinecam", "RefineCAM", refinecam, "RefineCAM: product of the normalised per-layer maps (arXiv:2605.14641)"
    )
)
register_fusion(
    Fusion(
        "polycam",
        "Poly-CAM",
        polycam,
        "Poly-CAM: deepest to shallowest, upsample × locally normalised map (Englebert et al. 2022)",
        select=_deepest_of_each_size,
    )
)
