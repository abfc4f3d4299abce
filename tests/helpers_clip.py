"""A tiny CLIP (transformers' CLIPModel from a small random config) and a tiny tokenizer,
both made offline: the vocabulary is the 26 letters (BPE with no merges tokenises a prompt
letter by letter)."""

from __future__ import annotations

import json
import string
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
LAYERS = [f"vision_model.encoder.layers.{i}.layer_norm1" for i in range(2)]


def tiny_clip(seed: int = 0) -> Any:
    """A CLIPModel: vision 32×32 images, 8×8 patches (a 4×4 token grid), hidden 16, 2 layers."""
    import transformers

    text = {"vocab_size": 64, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    config = transformers.CLIPConfig(
        text_config={**text, **SMALL}, vision_config={"image_size": 32, "patch_size": 8, **SMALL}, projection_dim=8
    )
    torch.manual_seed(seed)
    return transformers.CLIPModel(config).eval()


def tiny_tokenizer(folder: Path) -> Any:
    """A CLIPTokenizer over the letters, its vocab.json and merges.txt written to ``folder``."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in string.ascii_lowercase:
            vocab[c + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def clip_folder(tmp_path: Path, seed: int = 0) -> Path:
    """A folder written by save_pretrained: the tiny CLIP and its tokenizer."""
    folder = tmp_path / "clip"
    tok = tiny_tokenizer(tmp_path / "vocab")
    tiny_clip(seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- OpenCLIP's layout


class _Block(torch.nn.Module):
    """OpenCLIP's ``ResidualAttentionBlock``: ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, its
    attention an ``nn.MultiheadAttention`` called with ``need_weights=False``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(width)
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = torch.nn.LayerNorm(width)
        fc, proj = torch.nn.Linear(width, 2 * width), torch.nn.Linear(2 * width, width)
        self.mlp = torch.nn.Sequential(OrderedDict(c_fc=fc, gelu=torch.nn.GELU(), c_proj=proj))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(torch.nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = torch.nn.ModuleList(_Block(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


class _Visual(torch.nn.Module):
    """OpenCLIP's ``VisionTransformer``: ``conv1`` patches, ``class_embedding``,
    ``positional_embedding``, ``ln_pre``, ``transformer.resblocks``, ``ln_post`` on the class
    token, ``proj``."""

    def __init__(self, width: int, layers: int, heads: int, out: int, patch: int = 8, size: int = 32) -> None:
        super().__init__()
        grid = size // patch
        self.conv1 = torch.nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = torch.nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = torch.nn.Parameter(torch.randn(grid * grid + 1, width) * width**-0.5)
        self.ln_pre = torch.nn.LayerNorm(width)
        self.transformer = _Transformer(width, layers, heads)
        self.ln_post = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Parameter(torch.randn(width, out) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class TinyOpenCLIP(torch.nn.Module):
    """A model laid out as OpenCLIP's ``CLIP`` (module and parameter names, ``encode_image``,
    ``encode_text`` reading each prompt at its end token — the largest id —, a causal text
    mask, ``logit_scale``; ``forward`` returns ``(image_features, text_features,
    logit_scale.exp())`` normalised, as OpenCLIP's does), small and random: 32×32 images, 8×8
    patches, width 16, 2 blocks per tower."""

    CONTEXT = 12
    VOCAB = 30  # 0: padding, 1: start, 2…27: the letters, 29: end

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        width, heads, out = 16, 2, 8
        self.visual = _Visual(width, 2, heads, out)
        self.transformer = _Transformer(width, 2, heads)
        self.token_embedding = torch.nn.Embedding(self.VOCAB, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(self.CONTEXT, width) * 0.01)
        self.ln_final = torch.nn.LayerNorm(width)
        self.text_projection = torch.nn.Parameter(torch.randn(width, out) * width**-0.5)
        mask = torch.full((self.CONTEXT, self.CONTEXT), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.logit_scale = torch.nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.eval()

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.visual(image)
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        f = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(image, normalize=True), self.encode_text(text, normalize=True), self.logit_scale.exp()


def open_clip_tokenizer(prompts: str | list[str]) -> torch.Tensor:
    """OpenCLIP's tokenizer contract: prompts → ``(K, context)`` long ids, start token, the
    text (letters), end token, zero padding."""
    prompts = [prompts] if isinstance(prompts, str) else prompts
    out = torch.zeros(len(prompts), TinyOpenCLIP.CONTEXT, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids = [1] + [2 + string.ascii_lowercase.index(c) for c in p.lower() if c in string.ascii_lowercase]
        ids = [*ids[: TinyOpenCLIP.CONTEXT - 1], TinyOpenCLIP.VOCAB - 1]
        out[i, : len(ids)] = torch.tensor(ids)
    return out
