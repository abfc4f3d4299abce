"""Token and channels-last layers (issue 11 item 3), dict/tuple outputs: the torch capture
lays out ``(N, T, C)`` and ``(N, h, w, C)`` outputs as ``(N, C, h, w)`` by itself, checked
against an independent numpy Grad-CAM on hooks with hand-written grids. Models are built
from tiny random configs (no download)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from conftest import hooked_gradcam
from conftest import minmax as norm
from layerscope.capture import CaptureRequest, get_adapter
from layerscope.errors import ModelError, UsageError
from layerscope.methods import get_method

TOL = 1e-4


def reference_gradcam(
    model: nn.Module, x: torch.Tensor, paths: list[str], targets: list[int], layout: dict[str, tuple]
) -> dict[str, np.ndarray]:
    """Grad-CAM from plain hooks and ``autograd.grad``, laid out by hand: ``layout[path]`` is
    ``("tokens", extra, h, w)`` or ``("nhwc",)``; the math in numpy float64."""
    kept: dict[str, torch.Tensor] = {}

    def hook(path: str):  # type: ignore[no-untyped-def]
        def fn(m, i, o):  # type: ignore[no-untyped-def]
            kept[path] = o[0] if isinstance(o, tuple) else o

        return fn

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    logits = out.logits if hasattr(out, "logits") else out
    grads = torch.autograd.grad(logits[range(len(targets)), targets].sum(), [kept[p] for p in paths])
    maps = {}
    for p, g in zip(paths, grads, strict=True):
        a, g = kept[p].detach().double().numpy(), g.double().numpy()
        spec = layout[p]
        if spec[0] == "tokens":
            _, extra, h, w = spec
            a = a[:, extra:, :].reshape(len(a), h, w, -1).transpose(0, 3, 1, 2)
            g = g[:, extra:, :].reshape(len(g), h, w, -1).transpose(0, 3, 1, 2)
        elif spec[0] == "nhwc":
            a, g = a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)
        weights = g.mean(axis=(2, 3))
        maps[p] = np.maximum(np.einsum("nc,nchw->nhw", weights, a), 0)
    return maps


def hf_vit(image_size: tuple[int, int] = (32, 48)) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=5,
    )
    return transformers.ViTForImageClassification(config).eval()


def hf_swin() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 2], window_size=2, num_labels=5
    )
    return transformers.SwinForImageClassification(config).eval()


def test_hf_vit_default_layers_are_each_blocks_attention_input_none_flat() -> None:
    model = hf_vit()
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "flat map" warning: every block says something
        exp = layerscope.explain(model, x, target=[1, 4])
    paths = [f"vit.layers.{i}.layernorm_before" for i in range(3)]
    assert exp.layers == paths  # each block's attention input, in forward order
    assert exp.shapes[paths[0]] == (1 + 4 * 6, 16)  # CLS + a 4×6 grid of 8-px patches
    assert exp.caption(paths[0])[0] == (
        "Layer: vit.layers.0.layernorm_before · output 25x16 · attention input, tokens 25 → 4×6"
    )
    ref = reference_gradcam(model, x, paths, [1, 4], {p: ("tokens", 1, 4, 6) for p in paths})
    for p in paths:
        assert exp.cams[p].shape == (2, 4, 6)
        assert np.abs(norm(exp.cams[p]) - norm(ref[p])).max() <= TOL, p
        assert ref[p].reshape(2, -1).max(axis=1).min() > 0 and not exp.flat[p].any(), p
    assert exp.blocked == {}


def test_hf_vit_block_outputs_named_explicitly_leave_the_last_one_flat() -> None:
    model = hf_vit()
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    paths = ["vit.layers.0", "vit.layers.1", "vit.layers.2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = layerscope.explain(model, x, target=[1, 4], layers=paths)
    assert exp.caption("vit.layers.0")[0] == "Layer: vit.layers.0 · output 25x16 · tokens 25 → 4×6"
    ref = reference_gradcam(model, x, paths, [1, 4], {p: ("tokens", 1, 4, 6) for p in paths})
    for p in paths:
        assert np.abs(norm(exp.cams[p]) - norm(ref[p])).max() <= TOL, p
    # The head reads the CLS token only: the last block's output patch tokens get no
    # gradient, so its Grad-CAM is zero in both computations (flagged, with the reason).
    assert ref[paths[0]].max() > 0 and ref[paths[2]].max() == 0 and exp.cams[paths[2]].max() == 0
    assert exp.blocked == {paths[2]: "patch tokens"}


def test_hf_swin_blocks_equal_an_independent_reference() -> None:
    model = hf_swin()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    exp = layerscope.explain(model, x, target=[0, 3])
    paths = ["swin.encoder.layers.0.blocks.0", "swin.encoder.layers.0.blocks.1", "swin.encoder.layers.1.blocks.0"]
    assert exp.layers == paths
    grids = {paths[0]: (8, 8), paths[1]: (8, 8), paths[2]: (4, 4)}  # 32/4, then patch merging
    ref = reference_gradcam(model, x, paths, [0, 3], {p: ("tokens", 0, *g) for p, g in grids.items()})
    for p in paths:
        assert exp.cams[p].shape == (2, *grids[p])
        assert np.abs(norm(exp.cams[p]) - norm(ref[p])).max() <= TOL, p


def test_one_forward_one_backward_for_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    model = hf_vit((32, 32))
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    forwards = []
    model.register_forward_pre_hook(lambda m, i: forwards.append(1))
    exp = layerscope.explain(model, torch.randn(1, 3, 32, 32))
    assert len(exp.layers) == 3 and calls == [1] and forwards == [1]


class TinyDeiT(nn.Module):
    """Patch embedding (8 px), CLS + distillation tokens, two blocks; patch tokens only in the head."""

    def __init__(self, channels: int = 6, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, channels, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, channels))
        self.dist = nn.Parameter(torch.randn(1, 1, channels))
        self.blocks = nn.Sequential(*(Block(channels) for _ in range(2)))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        n = len(t)
        t = torch.cat([self.cls.expand(n, -1, -1), self.dist.expand(n, -1, -1), t], dim=1)
        t = self.blocks(t)
        return self.head(t[:, 0] + t[:, 2:].mean(dim=1))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(channels, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(channels, 12), nn.GELU(), nn.Linear(12, channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return t + self.mlp(t)


def test_two_extra_tokens_and_a_non_square_grid_are_inferred() -> None:
    model = TinyDeiT().eval()
    x = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    adapter = get_adapter("torch")
    layers = adapter.resolve_layers(model, None)
    assert layers == [("blocks.0", "blocks.0"), ("blocks.1", "blocks.1")]
    result = adapter.run(model, x, layers, [1, 2], CaptureRequest(fn=get_method("gradcam").fn))
    assert result.grids == {"blocks.0": "tokens 17 → 3×5", "blocks.1": "tokens 17 → 3×5"}
    ref = reference_gradcam(model, x, ["blocks.0", "blocks.1"], [1, 2], {p: ("tokens", 2, 3, 5) for p, _ in layers})
    for p, _ in layers:
        assert np.abs(norm(result.cams[p]) - norm(ref[p])).max() <= TOL, p


class TinyRegisterViT(nn.Module):
    """A hybrid stem (3×3 conv, 8× average pool: no patch-size convolution), a CLS and four
    register tokens in front (timm's ``num_prefix_tokens``), two blocks."""

    def __init__(self, channels: int = 6, classes: int = 4, registers: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.AvgPool2d(8))
        self.cls_token = nn.Parameter(torch.randn(1, 1, channels))
        self.reg_token = nn.Parameter(torch.randn(1, registers, channels))
        self.num_prefix_tokens = 1 + registers
        self.blocks = nn.Sequential(*(Block(channels) for _ in range(2)))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).transpose(1, 2)
        n = len(t)
        t = torch.cat([self.cls_token.expand(n, -1, -1), self.reg_token.expand(n, -1, -1), t], dim=1)
        t = self.blocks(t)
        return self.head(t[:, 0] + t[:, self.num_prefix_tokens :].mean(dim=1))


def test_declared_prefix_tokens_cls_and_registers_are_dropped() -> None:
    model = TinyRegisterViT().eval()
    x = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    adapter = get_adapter("torch")
    layers = [("blocks.0", "blocks.0"), ("blocks.1", "blocks.1")]
    result = adapter.run(model, x, layers, [1, 2], CaptureRequest(fn=get_method("gradcam").fn))
    assert result.grids == {"blocks.0": "tokens 20 → 3×5", "blocks.1": "tokens 20 → 3×5"}  # 1 + 4 + 3·5
    ref = reference_gradcam(model, x, ["blocks.0", "blocks.1"], [1, 2], {p: ("tokens", 5, 3, 5) for p, _ in layers})
    for p, _ in layers:
        assert np.abs(norm(result.cams[p]) - norm(ref[p])).max() <= TOL, p
    del model.num_prefix_tokens  # undeclared: 5 extra tokens and no patch size are no grid
    with pytest.raises(UsageError, match="reshape="):
        adapter.run(model, x, layers, [1, 2], CaptureRequest(fn=get_method("gradcam").fn))


def test_token_grid_takes_the_declared_prefix_first() -> None:
    from layerscope.capture._layers import token_grid

    assert token_grid(1 + 8 + 144, (96, 96), 8, prefix=9) == (9, (12, 12))  # 9 > MAX_EXTRA_TOKENS
    assert token_grid(1 + 8 + 144, (96, 96), 8) is None
    assert token_grid(144, (96, 96), 8, prefix=5) == (0, (12, 12))  # a patch embedding's output: no prefix
    assert token_grid(1 + 144, (96, 96), None, prefix=1) == (1, (12, 12))


class ChannelsLast(nn.Module):
    """A conv whose output is handed on channels-last, as Swin's stages do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.to_nhwc = Permute()
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.to_nhwc(self.conv(x))).mean(dim=(1, 2)))


class Permute(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def test_channels_last_output_is_permuted() -> None:
    model = ChannelsLast().eval()
    x = torch.randn(1, 3, 12, 20)
    exp = layerscope.explain(model, x, layers=["conv", "to_nhwc"], target=2)
    assert exp.shapes["to_nhwc"] == (12, 20, 5)
    np.testing.assert_allclose(exp.cams["to_nhwc"], exp.cams["conv"], rtol=1e-5, atol=1e-8)
    ref = reference_gradcam(model, x, ["to_nhwc"], [2], {"to_nhwc": ("nhwc",)})
    assert np.abs(norm(exp.cams["to_nhwc"]) - norm(ref["to_nhwc"])).max() <= TOL


class Sequence1D(nn.Module):
    """A layer whose 3-D output is no token grid of the input: (N, 7, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 16 * 16, 35)
        self.seq = nn.Identity()
        self.head = nn.Linear(35, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.seq(self.proj(x.flatten(1)).reshape(-1, 7, 5))
        return self.head(s.flatten(1))


def test_an_unknown_layout_names_reshape_and_reshape_works() -> None:
    model = Sequence1D().eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UsageError, match=r"outputs \(1, 7, 5\).*pass reshape=fn"):
        layerscope.explain(model, x, layers="seq")
    exp = layerscope.explain(model, x, layers="seq", reshape=lambda t: t.permute(0, 2, 1).reshape(-1, 5, 7, 1))
    assert exp.cams["seq"].shape == (1, 7, 1)
    with pytest.raises(UsageError, match="reshape= returned"):
        layerscope.explain(model, x, layers="seq", reshape=lambda t: t)


class DictOut(nn.Module):
    def __init__(self, key: str = "scores") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.key = key
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.conv(x)
        return {"features": a, self.key: self.head(a.mean(dim=(2, 3)))}


def test_dict_and_tuple_outputs_with_output_key() -> None:
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ModelError, match=r"without 'logits' \(keys: features, scores\).*output='scores'"):
        layerscope.explain(DictOut(), x)
    by_key = layerscope.explain(DictOut(), x, output="scores", target=1)
    as_logits = layerscope.explain(DictOut("logits"), x, target=1)
    np.testing.assert_allclose(by_key.cams["conv"], as_logits.cams["conv"], rtol=1e-6)
    with pytest.raises(UsageError, match="has no 'nope'"):
        layerscope.explain(DictOut(), x, output="nope")

    class TupleOut(DictOut):
        def forward(self, x):  # type: ignore[no-untyped-def, override]
            d = super().forward(x)
            return d["features"], d["scores"]

    by_index = layerscope.explain(TupleOut(), x, output=1, target=1)
    np.testing.assert_allclose(by_index.cams["conv"], by_key.cams["conv"], rtol=1e-6)


def test_callable_target_explains_any_score() -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    model = DictOut().eval()

    def margin(out: dict[str, torch.Tensor]) -> torch.Tensor:  # the whole output, a dict here
        return out["scores"][:, 2] - out["scores"][:, 0]

    exp = layerscope.explain(model, x, target=margin, output="scores")  # output=: the scores shown
    with torch.no_grad():
        raw = model(x)
    np.testing.assert_allclose(exp.scores, margin(raw).numpy(), rtol=1e-6)
    assert exp.targets.tolist() == raw["scores"].argmax(1).tolist()
    # Grad-CAM is linear in the score's gradient: the margin's map is that of ∂(y2 − y0).
    ref = reference_gradcam_dict(model, x, margin)
    assert np.abs(norm(exp.cams["conv"]) - norm(ref)).max() <= TOL
    with pytest.raises(UsageError, match=r"returned \(2, 3\); it must return one score per image"):
        layerscope.explain(model, x, target=lambda out: out["scores"], output="scores")
    with pytest.raises(UsageError, match="callable target works with the gradient methods"):
        layerscope.explain(model, x, target=margin, method="scorecam", output="scores")


def reference_gradcam_dict(model: nn.Module, x: torch.Tensor, score_fn) -> np.ndarray:  # type: ignore[no-untyped-def]
    return hooked_gradcam(model, ["conv"], lambda: model(x), lambda out: score_fn(out).sum())["conv"]
