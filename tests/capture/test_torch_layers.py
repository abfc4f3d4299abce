"""The default layers of a vision transformer (issue 19 item 1): each block's attention
input for a class-token model, so no block is blank; the block outputs for models that pool
every token; the vision tower only for CLIP. Maps checked against an independent Grad-CAM."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from conftest import minmax as norm
from layerscope.capture.torch.layers import default_layers

transformers = pytest.importorskip("transformers")

SMALL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}


class PreNormViT(nn.Module):
    """A class token and pre-norm ``TransformerEncoderLayer`` blocks; the head reads the class token."""

    def __init__(self, norm_first: bool = True, pool: str = "token") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first) for _ in range(3)
        )
        self.global_pool = pool
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)
        for b in self.blocks:
            t = b(t)
        return self.head(t[:, 1:].mean(dim=1) if self.global_pool == "avg" else t[:, 0])


def hooked_token_gradcam(model: nn.Module, x: torch.Tensor, paths: list[str], target: int, grid: int) -> dict:
    """Grad-CAM from plain forward hooks and ``autograd.grad``: tokens after the class token
    laid out as a ``grid × grid`` map by hand, the math in float64."""
    kept: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: kept.__setitem__(p, o)) for p in paths]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(out[:, target].sum(), [kept[p] for p in paths])
    maps = {}
    for p, g in zip(paths, grads, strict=True):
        a = kept[p].detach().double()[:, 1:].reshape(len(x), grid, grid, -1).numpy()
        g = g.double()[:, 1:].reshape(len(x), grid, grid, -1).numpy()
        maps[p] = np.maximum(np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a), 0)
    return maps


def test_a_pre_norm_class_token_model_is_explained_at_each_attention_input() -> None:
    model = PreNormViT().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    paths = [f"blocks.{i}.norm1" for i in range(3)]
    assert default_layers(model) == paths
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp = layerscope.explain(model, x, target=2)
    ref = hooked_token_gradcam(model, x, paths, 2, 4)
    for p in paths:
        assert np.abs(norm(exp.cams[p]) - norm(ref[p])).max() <= 1e-4, p
        assert ref[p].reshape(2, -1).max(axis=1).min() > 0 and not exp.flat[p].any(), p
    assert "attention input, tokens 17 → 4×4" in exp.caption(paths[-1])[0]


@pytest.mark.parametrize(("norm_first", "pool"), [(False, "token"), (True, "avg")])
def test_post_norm_and_mean_pooled_models_keep_the_block_outputs(norm_first: bool, pool: str) -> None:
    assert default_layers(PreNormViT(norm_first=norm_first, pool=pool)) == ["blocks.0", "blocks.1", "blocks.2"]


def test_a_mean_pooled_models_last_block_output_is_not_blank() -> None:
    exp = layerscope.explain(PreNormViT(pool="avg").eval(), torch.randn(1, 3, 16, 16), target=0)
    assert not exp.flat["blocks.2"].any() and exp.blocked == {}


def test_hugging_face_class_token_models_and_swin() -> None:
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(image_size=32, patch_size=8, **SMALL))
    deit = transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(image_size=32, patch_size=8, **SMALL)
    )
    beit_mean = transformers.BeitForImageClassification(
        transformers.BeitConfig(image_size=32, patch_size=8, use_mean_pooling=True, **SMALL)
    )
    swin = transformers.SwinForImageClassification(
        transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2])
    )
    assert default_layers(vit) == ["vit.layers.0.layernorm_before", "vit.layers.1.layernorm_before"]
    assert default_layers(deit) == ["deit.layers.0.layernorm_before", "deit.layers.1.layernorm_before"]
    assert default_layers(beit_mean) == ["beit.layers.0", "beit.layers.1"]
    assert default_layers(swin) == ["swin.encoder.layers.0.blocks.0", "swin.encoder.layers.1.blocks.0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp = layerscope.explain(deit.eval(), torch.randn(1, 3, 32, 32), target=1)  # CLS + distillation token
    assert not any(exp.flat[n].any() for n in exp.layers) and exp.shapes[exp.layers[0]] == (2 + 16, 16)


def test_clip_explains_its_vision_tower_only() -> None:
    text = {"vocab_size": 64, "max_position_embeddings": 8, "bos_token_id": 0, "eos_token_id": 1, **SMALL}
    config = transformers.CLIPConfig(
        text_config=text, vision_config={"image_size": 32, "patch_size": 8, **SMALL}, projection_dim=8
    )
    clip = transformers.CLIPModel(config)
    assert default_layers(clip) == [f"vision_model.encoder.layers.{i}.layer_norm1" for i in range(2)]
