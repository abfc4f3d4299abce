"""Layer names of a torch model: every module's path, the friendly names of its
``ModelInfo``, and the default layers (every ``Conv2d``, or one tensor per transformer block)."""

from __future__ import annotations

from typing import Any

from torch import nn

from layerscope.capture._layers import match_layers
from layerscope.errors import ModelError
from layerscope.info import ModelInfo


def layer_names(model: nn.Module, info: ModelInfo | None = None) -> dict[str, str]:
    """Every addressable layer, name → module path: the info's friendly names first, then
    every module's own path."""
    names: dict[str, str] = dict(info.layers) if info is not None else {}
    for path, _ in model.named_modules():
        if path:
            names.setdefault(path, path)
    return names


#: Parameter names of a class token (ViT, DeiT, BEiT: ``cls_token``; CLIP: ``class_embedding``).
CLASS_TOKEN_NAMES = ("cls_token", "class_embedding")

#: Names of a pre-norm block's LayerNorm in front of its attention (Hugging Face ViT, DeiT,
#: BEiT: ``layernorm_before``; timm: ``norm1``; CLIP: ``layer_norm1``; OpenCLIP: ``ln_1``).
ATTENTION_INPUT_NAMES = ("layernorm_before", "norm1", "layer_norm1", "ln_1")


def default_layers(model: nn.Module, info: ModelInfo | None = None) -> list[str]:
    """The default layers: the info's friendly names; else, for a vision transformer (its
    only convolutions are patch embeddings), one tensor per block (:func:`block_layers`);
    else every ``Conv2d``, in module order."""
    if info is not None and info.layers:
        return list(info.layers)
    convs = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if all(m.kernel_size == m.stride and m.stride[0] > 1 for _, m in convs):
        blocks = block_layers(model)
        if blocks:
            return blocks
    return [p for p, _ in convs]


def has_class_token(model: nn.Module) -> bool:
    """Whether the model has a class token parameter (:data:`CLASS_TOKEN_NAMES`)."""
    return any(name.rsplit(".", 1)[-1] in CLASS_TOKEN_NAMES for name, _ in model.named_parameters())


def pools_patch_tokens(model: nn.Module) -> bool:
    """Whether a class-token model's head averages the patch tokens instead of reading the
    class token (Hugging Face BEiT / Data2Vec ``use_mean_pooling``, timm ``global_pool="avg"``)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "use_mean_pooling", False)) or getattr(model, "global_pool", None) == "avg"


def attention_input(model: nn.Module, block: str) -> str | None:
    """The path of the LayerNorm in front of ``block``'s attention (:data:`ATTENTION_INPUT_NAMES`),
    or ``None`` when the block has none (a post-norm or norm-free block)."""
    module = model.get_submodule(block)
    if isinstance(module, nn.TransformerEncoderLayer) and not module.norm_first:
        return None  # post-norm: its norm1 follows the attention
    for name, child in module.named_children():
        if name in ATTENTION_INPUT_NAMES and isinstance(child, nn.LayerNorm):
            return f"{block}.{name}"
    return None


def block_layers(model: nn.Module) -> list[str]:
    """One tensor per transformer block (:func:`transformer_blocks`), the default layers of
    a vision transformer.

    A class-token model (ViT, DeiT, BEiT, CLIP's vision tower) is explained at each block's
    **attention input**, the output of the block's first LayerNorm: the classifier reads
    only the class token after the last block, so the last block's *output* patch tokens
    get no gradient and their map would be blank, while its attention input's patch tokens
    feed the class token through that block's attention. Models that pool all tokens (Swin,
    mean-pooled ViTs: :func:`pools_patch_tokens`) keep the block outputs, as do post-norm
    blocks (no LayerNorm in front of their attention). A model with a vision and a text tower (CLIP)
    has its vision blocks explained only.
    """
    blocks = vision_blocks(model)
    if not blocks or not has_class_token(model) or pools_patch_tokens(model):
        return blocks
    return [attention_input(model, b) or b for b in blocks]


def vision_blocks(model: nn.Module) -> list[str]:
    """The transformer blocks (:func:`transformer_blocks`) of the image tower: for a model
    with an image and a text tower (CLIP: ``vision_model`` / ``visual``), the image tower's
    only; else all."""
    blocks = transformer_blocks(model)
    vision = [b for b in blocks if any(part in ("vision_model", "visual") for part in b.split("."))]
    return vision or blocks


def _has_attention(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in module.modules())


def transformer_blocks(model: nn.Module) -> list[str]:
    """The transformer blocks: items of a ``ModuleList``/``Sequential`` that hold an attention
    module, innermost first (Swin's blocks, not its stages), in module order."""
    found: list[str] = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)):
            for i, item in enumerate(m):
                if _has_attention(item):
                    found.append(f"{path}.{i}" if path else str(i))
    return [p for p in found if not any(q.startswith(p + ".") for q in found)]


def resolve_layers(model: nn.Module, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
    """``(display name, module path)`` pairs; see :func:`layerscope.capture.match_layers`."""
    default = default_layers(model, info)
    if spec is None and not default:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer or transformer block; name the layers to explain")
    names = layer_names(model, info)
    modules = dict(model.named_modules())
    missing = [p for p in names.values() if p not in modules]
    if missing:
        raise ModelError(f"the model info names module {missing[0]!r}, which {type(model).__name__} does not have")
    return match_layers(spec, names, default)
