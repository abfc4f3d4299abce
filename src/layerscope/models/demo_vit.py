"""The built-in demo vision transformer: a small ViT trained on synthetic shapes (its
architecture, weights and facts; its training is :mod:`layerscope.training.demo_vit`).

It is the demo CNN's (:mod:`layerscope.models.demo`) transformer twin: the same data, classes,
image size (96×96) and preprocessing, so the two can be compared map for map. Its module
names are timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.0.norm1``,
``blocks.0.attn.qkv``, ``blocks.0.attn.attn_drop`` …), so whatever recognises a timm ViT
recognises it. The attention is written out (softmax, then ``attn_drop``), so its weights
can be hooked at ``attn_drop``.

Patches of 8 pixels give a 12×12 grid of tokens after one class (CLS) token and 4 register
tokens (timm's ``num_prefix_tokens`` = 5); 4 blocks of width 64, with neighbourhood
attention (:data:`WINDOW`): a patch token attends its 3×3 neighbourhood of patch tokens, the
class and register tokens attend every token. The shipped head reads the class token
(``global_pool="token"``); ``"avg"`` averages the patch tokens, then ``fc_norm``.

Its default layers are the blocks' ``norm1``, the residual stream entering each block's
attention: the output of the last block would be blank, as the head reads only the CLS
token. A mean-pooled head (``global_pool="avg"``) is explained at the blocks' outputs
instead: every patch token of every block reaches the averaged head. Train (deterministic on
the CPU)::

    python -m layerscope.training.demo_vit --train
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import torch
from torch import nn

from layerscope.datasets.shapes import CLASS_NAMES
from layerscope.info import RANDOM_WEIGHTS, ModelInfo
from layerscope.inputs import Preprocess
from layerscope.models.demo import IMAGE_SIZE, MEAN, STD

#: Side of a square patch (the patch embedding's kernel and stride): 96 / 8 = 12×12 tokens.
PATCH = 8
#: Token width.
DIM = 64
#: Transformer blocks.
DEPTH = 4
#: Attention heads per block.
HEADS = 4
#: Hidden width of each block's MLP, as a multiple of :data:`DIM`.
MLP_RATIO = 4
#: Register tokens after the class token (Darcet et al., ICLR 2024, "Vision Transformers
#: Need Registers"; timm's ``reg_token``): learned tokens with no position, read by nothing.
REGISTERS = 4
#: Neighbourhood attention (Hassani et al., CVPR 2023, "Neighborhood Attention Transformer"):
#: a patch token attends the patch tokens at most this many rows and columns from its own
#: (1: its 3×3 neighbourhood) and not the class or register tokens, which attend every
#: token. ``None``: every token attends every token (global attention). With global attention
#: every patch token carries the class after a block or two, background tokens as much as
#: the object's, and no map that weighs tokens by their class evidence can point at the
#: object (docs/demo-vit.md, "The variants tried").
WINDOW: int | None = 1
#: What the head reads (timm's ``global_pool``): ``"token"``, the class token after the
#: final norm; ``"avg"``, the mean of the patch tokens, then a norm (``fc_norm``).
GLOBAL_POOL = "token"
#: What each head's default layers are, for the label drawn on every frame.
TENSORS = {"token": "attention input (norm1)", "avg": "block output"}
#: The label drawn on every frame of the demo ViT.
NOTE = f"demo ViT (10 synthetic shapes), {TENSORS[GLOBAL_POOL]}"
#: Where the shipped weights live.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo_vit_shapes.safetensors"


#: The demo CNN's blocks the hybrid patch embedding reuses (blocks 1–3: stride 8).
STEM_BLOCKS = (2, 2, 3)
STEM_WIDTHS = (8, 16, 32)


class PatchEmbed(nn.Module):
    """A hybrid patch embedding (the ViT paper's "hybrid architecture", §3.1): the demo
    CNN's first three conv blocks (``backbone``, stride 8, its trained weights, frozen in
    training) then a 1×1 projection ``proj`` to the token width → tokens ``(N, T, dim)``
    (timm's names). One token per 8×8 patch, as a patch-8 ViT; a pure patch-8 linear
    embedding did not leave chance on the shapes in 1,860 steps (docs/demo-vit.md)."""

    def __init__(self, patch: int = PATCH, dim: int = DIM) -> None:
        super().__init__()
        from layerscope.models.vgg import make_features

        if patch != 2 ** len(STEM_BLOCKS):
            raise ValueError(f"the hybrid stem has stride {2 ** len(STEM_BLOCKS)}, not {patch}")
        self.backbone, _ = make_features(STEM_BLOCKS, STEM_WIDTHS)
        self.proj = nn.Conv2d(STEM_WIDTHS[-1], dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, written out: ``softmax(q kᵀ / √d)`` → ``attn_drop`` → ``· v``.

    ``fused_attn = False`` says (as in timm) that the attention weights are computed
    explicitly, so a hook on ``attn_drop`` sees them as ``(N, heads, T, T)``. ``window``
    (``None``: every token attends every token) makes it neighbourhood attention over
    ``prefix`` leading tokens and a square grid of patch tokens (:func:`neighbourhood_mask`;
    a key a query may not attend gets weight 0). The mask is made from the token count at
    each call (cached), not kept in a buffer: the registry builds models on the ``meta``
    device, where a buffer made by the constructor would be lost.
    """

    window: int | None = None
    prefix: int = 0

    fused_attn = False

    def __init__(self, dim: int = DIM, heads: int = HEADS) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.num_heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.window is not None:
            grid = math.isqrt(t - self.prefix)
            if grid * grid != t - self.prefix:
                raise ValueError(f"neighbourhood attention needs a square grid of patch tokens, not {t - self.prefix}")
            allowed = _cached_mask(grid, self.prefix, self.window, str(attn.device))
            attn = attn.masked_fill(~allowed, float("-inf"))
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    """``fc1`` → GELU → ``fc2`` (timm's names)."""

    def __init__(self, dim: int = DIM, hidden: int = MLP_RATIO * DIM) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int = DIM, heads: int = HEADS, mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DemoViT(nn.Module):
    """Patch embedding + CLS token + register tokens + learned position embeddings (of the
    CLS and patch tokens; the registers have none), :data:`DEPTH` blocks, and a linear head
    (logits) on the mean of the patch tokens after ``fc_norm`` (``global_pool="avg"``) or on
    the CLS token after ``norm`` (``"token"``; the other norm is an identity), as timm's.

    The tokens are laid out as timm's: ``[CLS, reg_1 … reg_R, patch_1 … patch_hw]``;
    ``num_prefix_tokens`` (``1 + R``) says how many come before the patches.
    """

    def __init__(
        self,
        image_size: int = IMAGE_SIZE,
        patch: int = PATCH,
        dim: int = DIM,
        depth: int = DEPTH,
        heads: int = HEADS,
        num_classes: int = len(CLASS_NAMES),
        reg_tokens: int = REGISTERS,
        global_pool: str = GLOBAL_POOL,
        window: int | None = WINDOW,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', not {global_pool!r}")
        grid = image_size // patch
        self.global_pool = global_pool
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = 1 + reg_tokens
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, dim)) if reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.window = window
        for block in self.blocks:
            block.attn.window, block.attn.prefix = window, self.num_prefix_tokens
        self.norm = nn.LayerNorm(dim, eps=1e-6) if global_pool == "token" else nn.Identity()
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6) if global_pool == "avg" else nn.Identity()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        n = len(tokens)
        x = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1) + self.pos_embed
        if self.reg_token is not None:  # after the position embeddings, as DINOv2's registers
            x = torch.cat([x[:, :1], self.reg_token.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        if self.global_pool == "avg":
            return self.head(self.fc_norm(x[:, self.num_prefix_tokens :].mean(dim=1)))
        return self.head(self.norm(x)[:, 0])


def neighbourhood_mask(grid: int, prefix: int, window: int) -> torch.Tensor:
    """Which key each query may attend, ``(T, T)`` boolean for ``T = prefix + grid²`` tokens
    laid out ``[prefix tokens, patch tokens in row-major order]``: a prefix token attends every
    token; a patch token the patch tokens at most ``window`` rows and columns from its own."""
    if window < 0:
        raise ValueError(f"window must be at least 0, not {window}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    near = ((rows[:, None] - rows[None, :]).abs() <= window) & ((cols[:, None] - cols[None, :]).abs() <= window)
    allowed = torch.zeros(prefix + grid * grid, prefix + grid * grid, dtype=torch.bool)
    allowed[:prefix] = True
    allowed[prefix:, prefix:] = near
    return allowed


@functools.lru_cache(maxsize=16)
def _cached_mask(grid: int, prefix: int, window: int, device: str) -> torch.Tensor:
    return neighbourhood_mask(grid, prefix, window).to(device)


def layers(depth: int = DEPTH, global_pool: str = GLOBAL_POOL) -> dict[str, str]:
    """``{"block1": "blocks.0.norm1", …}``: each block's attention input when the head reads
    the class token; ``{"block1": "blocks.0", …}``, each block's output, when it averages the
    patch tokens (the rule of :func:`layerscope.capture.torch.layers.block_layers`)."""
    if global_pool == "avg":
        return {f"block{i + 1}": f"blocks.{i}" for i in range(depth)}
    return {f"block{i + 1}": f"blocks.{i}.norm1" for i in range(depth)}


def info(random: bool = False, global_pool: str = GLOBAL_POOL) -> ModelInfo:
    """The demo ViT's facts: its blocks' default tensors (:func:`layers`) as friendly layers,
    the shapes' class names, the demo CNN's preprocessing, logits, its one input size;
    ``global_pool`` the head's (the shipped model's by default)."""
    note = f"demo ViT (10 synthetic shapes), {TENSORS[global_pool]}"
    return ModelInfo(
        name="demo-vit",
        layers=layers(global_pool=global_pool),
        class_names=tuple(CLASS_NAMES),
        preprocess=Preprocess((IMAGE_SIZE, IMAGE_SIZE), MEAN, STD),
        output="logits",
        warning=RANDOM_WEIGHTS if random else None,
        note=f"{note}, RANDOM WEIGHTS" if random else note,
        input_size=(IMAGE_SIZE, IMAGE_SIZE),
    )


def init_demo_vit_(model: nn.Module, seed: int) -> None:
    """Deterministic initialisation: truncated normal weights with fan-in scaling (σ² =
    1 / fan-in; timm's fixed σ 0.02 is meant for width 768: at width 64 every block would
    start close to the identity), σ 0.02 for the position embeddings and
    the CLS token, σ 1e-6 for the register tokens (timm's, DINOv2's), zero biases, unit
    layer norms."""
    gen = torch.Generator().manual_seed(seed)

    def trunc_normal_(t: torch.Tensor, std: float) -> None:
        t.normal_(0.0, std, generator=gen).clamp_(-2.0 * std, 2.0 * std)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, math.sqrt(1.0 / m.weight[0].numel()))
                m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        if isinstance(model, DemoViT):
            trunc_normal_(model.pos_embed, 0.02)
            trunc_normal_(model.cls_token, 0.02)
            if model.reg_token is not None:
                trunc_normal_(model.reg_token, 1e-6)


def shipped_weights() -> Path:
    """The shipped weights file (an error naming the command that makes it when missing)."""
    if not DEFAULT_WEIGHTS.is_file():
        from layerscope.errors import WeightsError

        raise WeightsError(
            f"{DEFAULT_WEIGHTS}: the demo ViT's weights are missing; make them with "
            "`python -m layerscope.training.demo_vit --train`"
        )
    return DEFAULT_WEIGHTS


def build(weights: str | os.PathLike[str] | None = "default", seed: int = 0) -> DemoViT:
    """The demo ViT, in eval mode: ``layerscope.load_model("demo-vit", weights, seed=seed)``.

    Args:
        weights: ``"default"`` (the shipped, trained weights), ``"random"`` or ``None``
            (deterministic random initialisation from ``seed``), or a path to a state dict.
        seed: the seed of the random initialisation.
    """
    from layerscope.models.registry import load_model

    return load_model("demo-vit", weights="random" if weights is None else weights, seed=seed)
