"""A tiny CLIP (transformers' CLIPModel from a small random config) and a tiny tokenizer,
both made offline: the vocabulary is the 26 letters (BPE with no merges tokenises a prompt
letter by letter)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

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
