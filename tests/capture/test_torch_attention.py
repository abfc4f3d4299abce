"""The attention capture (capture/torch/attention.py): weights from HF, timm-style and
``nn.MultiheadAttention`` blocks, one forward and one backward pass for every block, the
model left exactly as it was (also after an error), and one clear error where the methods
do not apply."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import layerscope
from conftest import run_cli
from layerscope.errors import UsageError

TOL = 1e-5
METHODS = ["rollout", "gradrollout", "legrad"]


def hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=32, num_labels=5,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config).eval()


class TimmAttention(nn.Module):
    """timm's ``Attention`` layout: ``qkv``, ``attn_drop``, ``proj`` and a ``fused_attn`` flag."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(0.1)
        self.proj = nn.Linear(dim, dim)
        self.fused_attn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        return self.proj(x.transpose(1, 2).reshape(b, t, c))


class TimmBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), TimmAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    """A timm-style ViT: 8-px patches, a CLS token, three blocks, the head on the CLS token."""

    def __init__(self, dim: int = 12, classes: int = 4, depth: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = nn.Conv2d(3, dim, 8, stride=8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(*(TimmBlock(dim) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)
        return self.head(self.norm(self.blocks(t))[:, 0])


def timm_reference(model: TimmViT, x: torch.Tensor, targets: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Attention weights and their gradients from the test's own hooks (non-fused path)."""
    kept: list[torch.Tensor] = []
    handles = [b.attn.attn_drop.register_forward_pre_hook(lambda m, i: kept.append(i[0])) for b in model.blocks]
    flags = [b.attn.fused_attn for b in model.blocks]
    try:
        for b in model.blocks:
            b.attn.fused_attn = False
        out = model(x)
    finally:
        for h, b, f in zip(handles, model.blocks, flags, strict=True):
            h.remove()
            b.attn.fused_attn = f
    grads = torch.autograd.grad(out[range(len(targets)), targets].sum(), kept)
    return [a.detach().double().numpy() for a in kept], [g.double().numpy() for g in grads]


def state(model: nn.Module) -> dict[str, object]:
    """What the capture may change for a pass and must restore."""
    configs = {id(m.config): m.config._attn_implementation for m in model.modules() if hasattr(m, "config")}
    return {
        "attn": sorted(configs.values()),
        "fused": [getattr(m, "fused_attn", None) for m in model.modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "training": [m.training for m in model.modules()],
        "fastpath": torch.backends.mha.get_fastpath_enabled(),
        "grad": [p.requires_grad for p in model.parameters()],
    }


def boom(out: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("boom inside the pass")


@pytest.mark.parametrize("build", [hf_vit, TimmViT], ids=["hf", "timm"])
def test_the_model_is_unchanged_afterwards_also_after_an_error(build) -> None:  # type: ignore[no-untyped-def]
    model = build()
    before = state(model)
    assert before["attn"] in ([], ["sdpa"]) and (before["fused"].count(True) in (0, 3))
    x = torch.randn(1, 3, 32, 32)
    for method in METHODS:
        layerscope.explain(model, x, method=method)
        assert state(model) == before, method
    with pytest.raises(RuntimeError, match="boom"):
        layerscope.explain(model, x, method="gradrollout", target=boom)
    assert state(model) == before


@pytest.mark.parametrize("method", ["gradrollout", "legrad", "rollout"])
def test_one_forward_and_one_backward_for_every_block(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = hf_vit()
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    forwards = []
    model.register_forward_pre_hook(lambda m, i: forwards.append(1))
    exp = layerscope.explain(model, torch.randn(2, 3, 32, 32), method=method)
    assert len(exp.layers) == 3 and forwards == [1]
    assert calls == ([] if method == "rollout" else [1])


def test_a_timm_style_vit_gives_chefers_gradrollout() -> None:
    model = TimmViT().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    atts, grads = timm_reference(model, x, [0, 3])
    exp = layerscope.explain(model, x, method="gradrollout", target=[0, 3])
    assert exp.layers == ["blocks.0", "blocks.1", "blocks.2"]
    r = np.broadcast_to(np.eye(17), (2, 17, 17))
    for b, a, g in zip(exp.layers, atts, grads, strict=True):
        r = r + np.maximum(a * g, 0).mean(axis=1) @ r
        assert np.abs(exp.cams[b] - r[:, 0, 1:].reshape(2, 4, 4)).max() <= TOL, b
    assert all(blk.attn.fused_attn for blk in model.blocks) and model.training is False


class EncoderViT(nn.Module):
    """``nn.TransformerEncoder`` blocks (``nn.MultiheadAttention`` inside, torch's fast path)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.encoder(torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1))[:, 0])


def test_multihead_attention_blocks_give_their_weights() -> None:
    model = EncoderViT().eval()
    x = torch.randn(1, 3, 16, 32, generator=torch.Generator().manual_seed(5))
    kept = []
    with torch.no_grad():  # the test's own weights: each layer's attention asked for them
        t = torch.cat([model.cls, model.patch(x).flatten(2).transpose(1, 2)], dim=1)
        for layer in model.encoder.layers:
            kept.append(layer.self_attn(t, t, t, need_weights=True, average_attn_weights=False)[1].double().numpy())
            t = layer(t)
    before = state(model)
    exp = layerscope.explain(model, x, method="rollout")
    assert exp.layers == ["encoder.layers.0", "encoder.layers.1"] and state(model) == before
    r = np.eye(9)[None]
    for b, a in zip(exp.layers, kept, strict=True):
        a_hat = 0.5 * a.mean(axis=1) + 0.5 * np.eye(9)
        r = (a_hat / a_hat.sum(-1, keepdims=True)) @ r
        assert np.abs(exp.cams[b] - r[:, 0, 1:].reshape(1, 2, 4)).max() <= TOL, b
    assert layerscope.explain(model, x, method="legrad").cams["encoder.layers.1"].shape == (1, 2, 4)


def _explicit_attention(mha: nn.MultiheadAttention, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention written out (batch first): ``(output, weights (N, H, T, T))``."""
    n, length, e = t.shape
    h = mha.num_heads
    q, k, v = (
        z.reshape(n, length, h, e // h).transpose(1, 2)
        for z in F.linear(t, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
    )
    a = torch.softmax(q @ k.transpose(-1, -2) / (e // h) ** 0.5, dim=-1)
    out = (a @ v).transpose(1, 2).reshape(n, length, e)
    return F.linear(out, mha.out_proj.weight, mha.out_proj.bias), a


def test_multihead_attention_blocks_give_chefers_gradrollout() -> None:
    """The gradient of the score w.r.t. an ``nn.MultiheadAttention``'s weights (torch hands
    them out as a view taken after their use, which no gradient reaches) equals the one of
    the encoder written out here; gradrollout then follows Chefer et al.'s rule."""
    model = EncoderViT().eval()
    x = torch.randn(2, 3, 16, 32, generator=torch.Generator().manual_seed(6))
    t = torch.cat([model.cls.expand(2, -1, -1), model.patch(x).flatten(2).transpose(1, 2)], dim=1)
    atts = []
    for layer in model.encoder.layers:  # post-norm layers, ReLU, no dropout
        o, a = _explicit_attention(layer.self_attn, t)
        atts.append(a)
        t = layer.norm1(t + o)
        t = layer.norm2(t + layer.linear2(torch.relu(layer.linear1(t))))
    score = model.head(t[:, 0])[[0, 1], [2, 0]].sum()
    grads = torch.autograd.grad(score, atts)
    exp = layerscope.explain(model, x, method="gradrollout", target=[2, 0])
    r = np.broadcast_to(np.eye(9), (2, 9, 9))
    for b, a, g in zip(exp.layers, atts, grads, strict=True):
        a, g = a.detach().double().numpy(), g.double().numpy()
        assert np.abs(g).max() > 1e-4  # the reference's gradient is not zero: the check can fail
        r = r + np.maximum(a * g, 0).mean(axis=1) @ r
        assert np.abs(exp.cams[b] - r[:, 0, 1:].reshape(2, 2, 4)).max() <= TOL, b
    assert not exp.flat["encoder.layers.1"].any()


class SdpaOnlyAttention(nn.Module):
    """Attention through one fused call that returns no weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv_proj = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(x)[:, None].chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v)[:, 0]


class SdpaViT(TimmViT):
    def __init__(self) -> None:
        super().__init__()
        for blk in self.blocks:
            blk.attn = SdpaOnlyAttention(12)


def test_clear_errors_where_the_methods_do_not_apply() -> None:
    x = torch.randn(1, 3, 32, 32)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UsageError, match="rollout explains a vision transformer's attention, and Sequential has no"):
        layerscope.explain(cnn.eval(), x, method="rollout")
    model = SdpaViT().eval()
    before = state(model)
    with pytest.raises(UsageError, match="SdpaOnlyAttention computes attention in a fused kernel"):
        layerscope.explain(model, x, method="gradrollout")
    assert state(model) == before
    with pytest.raises(UsageError, match="'patch_embed' is not a block of TimmViT"):
        layerscope.explain(TimmViT().eval(), x, method="rollout", layers="patch_embed")
    with pytest.raises(UsageError, match="callable target works with gradrollout"):
        layerscope.explain(TimmViT().eval(), x, method="legrad", target=boom)


def test_swin_is_refused_for_rollout_saying_why() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 2], window_size=2, num_labels=5
    )
    model = transformers.SwinForImageClassification(config).eval()
    before = state(model)
    for method in METHODS:
        with pytest.raises(UsageError, match=r"does not apply to SwinForImageClassification.*windowed.*\(Swin\)"):
            layerscope.explain(model, torch.randn(1, 3, 32, 32), method=method)
    assert state(model) == before


def test_a_keras_model_is_refused() -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp)))
    with pytest.raises(UsageError, match="'rollout' is not available for Keras models: it needs the attention"):
        layerscope.explain(keras.Model(inp, out), np.zeros((1, 16, 16, 3), np.float32), method="rollout")


def test_tour_of_a_saved_hf_vit_with_rollout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "vit"
    hf_vit().save_pretrained(folder)
    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "tour.gif"
    code, stdout, err = run_cli(capsys, "tour", str(picture), "--model", f"hf:{folder}", "--method", "rollout",
                                "-o", str(out))  # fmt: skip
    assert code == 0, err
    assert "3 layers, rollout" in stdout
    with Image.open(out) as im:
        assert im.n_frames == 3
        im.seek(2)
        frame = np.asarray(im.convert("RGB"))
    assert frame.std() > 10  # a drawn frame (overlay, caption, colour bar), not a blank canvas
