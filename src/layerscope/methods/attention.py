"""Transformer-native explainers: maps made of a vision transformer's attention weights.

Each works on the attention weights of **every** transformer block, stacked:
``A`` ``(L, N, H, T, T)`` (blocks, images, heads, query tokens, key tokens; each row a
softmax), and for the gradient methods ``G = ∂y/∂A`` of the same shape (see each method
for which score ``y``), torch tensors or numpy arrays. The capture hands over where the
patch tokens are: ``extra`` leading tokens (the class token first, then e.g. DeiT's
distillation token) and the ``grid`` ``(h, w)`` of the ``T − extra`` patch tokens.

Each returns ``(L, N, h, w)``: one map per block, the map of block ``i`` made of blocks
``0 … i`` only, so the maps themselves are a tour of the layers. A map is the class
token's row (or, for LeGrad, a mean over all query rows) over the patch tokens, laid out
as the grid; the extra tokens' columns are dropped.
"""

from __future__ import annotations

from typing import Any

from layerscope.errors import UsageError
from layerscope.methods._ops import amax, amin, concat, eye, minmax_per_map, stack, zero_lowest
from layerscope.methods._registry import Method, register

#: ``rollout``'s ``head_fusion`` values.
HEAD_FUSIONS = ("mean", "max", "min")


def _grid_maps(rows: list[Any], extra: int, grid: tuple[int, int]) -> Any:
    """``(N, T)`` rows, one per block, as ``(L, N, h, w)`` maps of the patch tokens."""
    out = stack([r[:, extra:] for r in rows])
    return out.reshape(out.shape[0], out.shape[1], int(grid[0]), int(grid[1]))


def fuse_heads(attentions: Any, how: str) -> Any:
    """``(L, N, H, T, T)`` → ``(L, N, T, T)``: the heads' mean, maximum or minimum."""
    if how == "mean":
        return attentions.mean(axis=2)
    if how == "max":
        return amax(attentions, 2)
    if how == "min":
        return amin(attentions, 2)
    raise UsageError(f"unknown head_fusion {how!r}; expected one of {', '.join(HEAD_FUSIONS)}")


def rollout(
    attentions: Any,
    gradients: Any,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    *,
    extra: int,
    grid: tuple[int, int],
) -> Any:
    """Attention rollout (Abnar & Zuidema, ACL 2020, "Quantifying Attention Flow in
    Transformers"), with the head fusion and discarding of Gildenblat's vit-explain.

    Per block ``l``: ``F_l`` = the heads of ``A_l`` fused (``head_fusion``: their mean, max
    or min); with ``discard_ratio`` ``r > 0``, the ``⌊r · T·(T−1)⌋`` lowest values of each
    image's ``F_l`` outside the class-token column (column 0, never dropped) set to 0;
    ``Â_l = 0.5·F_l + 0.5·I`` (the residual connection), each row divided by its sum. The
    rollout up to block ``i`` is ``R_i = Â_i · Â_{i−1} ··· Â_0`` and its map is
    ``R_i[0, extra:]`` (the class token's row over the patch tokens) as the grid.
    No gradients: one forward pass.

    Args:
        attentions: ``A`` ``(L, N, H, T, T)``.
        gradients: unused (``None``).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
        discard_ratio: the fraction of the lowest attention weights dropped per block, in
            ``[0, 1)``.
        extra: leading non-patch tokens (class token first).
        grid: ``(h, w)`` of the patch tokens.

    Returns:
        ``(L, N, h, w)`` non-negative maps.
    """
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise UsageError(f"discard_ratio must be in [0, 1), not {discard_ratio!r}")
    fused = fuse_heads(attentions, head_fusion)
    n_blocks, n, t, _ = fused.shape
    k = int(discard_ratio * t * (t - 1))
    if k > 0:
        rest = zero_lowest(fused[..., 1:].reshape(n_blocks * n, t * (t - 1)), k).reshape(n_blocks, n, t, t - 1)
        fused = concat([fused[..., :1], rest], axis=-1)
    a = 0.5 * fused + 0.5 * eye(fused, t)
    a = a / a.sum(axis=-1, keepdims=True)
    r = a[0]
    rows = [r[:, 0]]
    for i in range(1, n_blocks):
        r = a[i] @ r
        rows.append(r[:, 0])
    return _grid_maps(rows, extra, grid)


def gradrollout(attentions: Any, gradients: Any, *, extra: int, grid: tuple[int, int]) -> Any:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021, "Generic
    Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", the self-attention rule, eqs. 5–6).

    ``Ā_l = E_h[(∇A_l ⊙ A_l)⁺]`` (the positive part of gradient × attention, averaged over
    the heads), with ``∇A_l = ∂y/∂A_l`` of the explained class's score ``y`` (the model's
    output); ``R_{−1} = I`` and ``R_l = R_{l−1} + Ā_l · R_{l−1}``. The map up to block ``i``
    is ``R_i[0, extra:]`` (the class token's row over the patch tokens) as the grid.
    One forward and one backward pass for every block.

    Returns:
        ``(L, N, h, w)`` non-negative maps.
    """
    cam = (gradients * attentions).clip(min=0).mean(axis=2)
    r = eye(cam, cam.shape[-1]) + 0 * cam[0]
    rows = []
    for i in range(cam.shape[0]):
        r = r + cam[i] @ r
        rows.append(r[:, 0])
    return _grid_maps(rows, extra, grid)


def legrad(attentions: Any, gradients: Any, *, extra: int, grid: tuple[int, int]) -> Any:
    """LeGrad (Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, 2024, "LeGrad: An
    Explainability Method for Vision Transformers via Feature Formation Sensitivity",
    arXiv:2404.03214, eqs. for ``Ê^l`` and ``Ē``).

    Each block ``l`` is scored on its own: ``s^l`` is the explained class's score of the
    model's head (everything after the last block: final norm, pooling, classifier) applied
    to block ``l``'s output tokens, and ``∇A_l = ∂s^l/∂A_l`` (the capture's
    ``"layer_scores"``: all ``L`` scores from one forward and one backward pass). Then
    ``Ê^l = 1/(H·T) Σ_h Σ_q ReLU(∇A_l[h, q, :])`` (the mean over heads and all query tokens,
    class token included), a vector over the key tokens. The map up to block ``i`` is
    ``minmax(1/(i+1) Σ_{l ≤ i} Ê^l[extra:])`` as the grid (min-max per image: 0 … 1; a flat
    map is 0). The attention weights themselves are not used.

    Returns:
        ``(L, N, h, w)`` maps in ``[0, 1]``.
    """
    per_block = gradients.clip(min=0).mean(axis=(2, 3))
    rows = []
    total = 0 * per_block[0]
    for i in range(per_block.shape[0]):
        total = total + per_block[i]
        rows.append(total / (i + 1))
    return minmax_per_map(_grid_maps(rows, extra, grid))


_COST = "1 forward + 1 backward, every block together"

register(
    Method(
        name="rollout",
        title="Attention rollout",
        fn=rollout,
        summary="attention rollout: the blocks' head-fused attention (+ identity) multiplied up (Abnar & Zuidema 2020)",
        needs=frozenset({"attention"}),
        cost="1 forward, every block together",
    )
)
register(
    Method(
        name="gradrollout",
        title="Gradient rollout",
        fn=gradrollout,
        summary="gradient-weighted rollout: R += mean_h (∇A ⊙ A)⁺ · R over the blocks (Chefer et al. 2021)",
        needs=frozenset({"attention", "gradients"}),
        cost=_COST,
    )
)
register(
    Method(
        name="legrad",
        title="LeGrad",
        fn=legrad,
        summary="LeGrad: each block's own score's positive attention gradients, averaged (Bousselham et al. 2024)",
        needs=frozenset({"attention", "gradients", "layer_scores"}),
        cost=_COST,
    )
)
