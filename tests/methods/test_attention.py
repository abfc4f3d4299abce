"""rollout, gradrollout and legrad (methods/attention.py) against independent numpy
implementations of their papers' formulas, from attention weights the test captures itself
(Hugging Face's ``output_attentions`` on the eager path) on a ViT and a DeiT built from tiny
random configs; the torch and numpy spellings of the methods agree."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from layerscope.errors import UsageError
from layerscope.methods import get_method, list_methods
from layerscope.methods.attention import gradrollout, legrad, rollout

TOL = 1e-5
TARGETS = [1, 4]
BLOCKS = ["vit.layers.0", "vit.layers.1", "vit.layers.2"]


def hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=(32, 48),
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=5,
    )
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # sharper attention than the tiny random init gives
        for blk in model.vit.layers:
            blk.attention.q_proj.weight.mul_(6.0)
            blk.attention.k_proj.weight.mul_(6.0)
    return model


def x_in() -> torch.Tensor:
    return torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))


@contextlib.contextmanager
def eager(model: nn.Module) -> Iterator[None]:
    """The test's own switch to the eager path (for its reference), restored."""
    old = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        yield
    finally:
        model.config._attn_implementation = old


def reference_forward(model: nn.Module, x: torch.Tensor, grad: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Attentions (output_attentions) and each block's output (the test's own hooks)."""
    outs: list[torch.Tensor] = []
    handles = [model.get_submodule(b).register_forward_hook(lambda m, i, o: outs.append(o)) for b in BLOCKS]
    try:
        with eager(model), torch.set_grad_enabled(grad):
            res = model(x, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return list(res.attentions), outs, res.logits


def np_rollout(atts: list[np.ndarray], fusion: str, discard: float, extra: int, grid: tuple[int, int]) -> np.ndarray:
    """Abnar & Zuidema's rollout, written plainly: per block fuse heads, drop the lowest
    ``discard`` fraction outside the CLS column, 0.5·A + 0.5·I, rows renormalised, product."""
    n, _, t, _ = atts[0].shape
    r = np.broadcast_to(np.eye(t), (n, t, t))
    maps = []
    for a in atts:
        f = {"mean": a.mean(axis=1), "max": a.max(axis=1), "min": a.min(axis=1)}[fusion].copy()
        for i in range(n):
            rest = f[i, :, 1:].ravel().copy()
            k = int(discard * rest.size)
            rest[np.argsort(rest, kind="stable")[:k]] = 0.0
            f[i, :, 1:] = rest.reshape(t, t - 1)
        a_hat = 0.5 * f + 0.5 * np.eye(t)
        a_hat = a_hat / a_hat.sum(axis=-1, keepdims=True)
        r = a_hat @ r
        maps.append(r[:, 0, extra:].reshape(n, *grid))
    return np.stack(maps)


@pytest.mark.parametrize(("fusion", "discard"), [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.9)])
def test_rollout_equals_abnar_zuidema_in_numpy(fusion: str, discard: float) -> None:
    model, x = hf_vit(), x_in()
    atts, _, _ = reference_forward(model, x, grad=False)
    ref = np_rollout([a.double().numpy() for a in atts], fusion, discard, 1, (4, 6))
    exp = layerscope.explain(model, x, method="rollout", target=TARGETS, head_fusion=fusion, discard_ratio=discard)
    assert exp.layers == BLOCKS
    for i, b in enumerate(BLOCKS):
        assert exp.cams[b].shape == (2, 4, 6)
        assert np.abs(exp.cams[b] - ref[i]).max() <= TOL, (b, fusion, discard)
    assert ref[-1].std() > 1e-3  # not a flat map: the check means something


def test_gradrollout_equals_chefer_rule_from_the_tests_autograd() -> None:
    model, x = hf_vit(), x_in()
    atts, _, logits = reference_forward(model, x, grad=True)
    grads = torch.autograd.grad(logits[range(2), TARGETS].sum(), atts)
    n, t = 2, atts[0].shape[-1]
    r = np.broadcast_to(np.eye(t), (n, t, t))
    ref = []
    for a, g in zip(atts, grads, strict=True):
        cam = np.maximum(g.double().numpy() * a.detach().double().numpy(), 0).mean(axis=1)
        r = r + cam @ r
        ref.append(r[:, 0, 1:].reshape(n, 4, 6))
    exp = layerscope.explain(model, x, method="gradrollout", target=TARGETS)
    for i, b in enumerate(BLOCKS):
        scale = np.abs(ref[i]).max()
        assert scale > 0
        assert np.abs(exp.cams[b] - ref[i]).max() <= TOL * max(scale, 1.0), b
        assert np.abs(exp.cams[b] - ref[i]).max() / scale <= 1e-4, b


def test_legrad_equals_the_papers_equations_one_score_per_block() -> None:
    """Ê^l = mean over heads and queries of ReLU(∂s^l/∂A^l), s^l the head (final norm +
    classifier on the CLS token) applied to block l's output; the map up to block i is
    minmax(mean_{l≤i} Ê^l) over the patch tokens. L separate backward passes here."""
    model, x = hf_vit(), x_in()
    atts, outs, logits = reference_forward(model, x, grad=True)
    per_block = []
    for a, z in zip(atts, outs, strict=True):
        s = model.classifier(model.vit.layernorm(z)[:, 0])[range(2), TARGETS].sum()
        (g,) = torch.autograd.grad(s, [a], retain_graph=True)
        per_block.append(np.maximum(g.double().numpy(), 0).mean(axis=(1, 2))[:, 1:])
    exp = layerscope.explain(model, x, method="legrad", target=TARGETS)
    for i, b in enumerate(BLOCKS):
        e = np.mean(per_block[: i + 1], axis=0).reshape(2, 4, 6)
        lo, hi = e.min(axis=(1, 2), keepdims=True), e.max(axis=(1, 2), keepdims=True)
        ref = (e - lo) / (hi - lo)
        assert np.abs(exp.cams[b] - ref).max() <= TOL, b
    # block 0's own score differs from the model's final score: not plain final-score gradients
    (g0,) = torch.autograd.grad(logits[range(2), TARGETS].sum(), [atts[0]])
    assert not np.allclose(np.maximum(g0.numpy(), 0).mean(axis=(1, 2))[:, 1:], per_block[0], atol=1e-6)


def hf_deit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.DeiTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3,
    )  # fmt: skip
    return transformers.DeiTForImageClassificationWithTeacher(config).eval()


def test_deit_uses_the_cls_row_and_drops_both_extra_tokens() -> None:
    model = hf_deit()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with eager(model), torch.no_grad():
        atts = model(x, output_attentions=True).attentions
    assert atts[0].shape[-1] == 2 + 16
    ref = np_rollout([a.double().numpy() for a in atts], "mean", 0.0, 2, (4, 4))
    exp = layerscope.explain(model, x, method="rollout")
    for i, b in enumerate(exp.layers):
        assert exp.cams[b].shape == (1, 4, 4)
        assert np.abs(exp.cams[b] - ref[i]).max() <= TOL


def test_torch_and_numpy_spellings_agree() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 2, 2, 7, 7))
    a = a / a.sum(-1, keepdims=True)
    g = rng.standard_normal(a.shape)
    for fn, kw in ((rollout, {"head_fusion": "max", "discard_ratio": 0.5}), (gradrollout, {}), (legrad, {})):
        got_np = fn(a, g, extra=1, grid=(2, 3), **kw)
        got_t = fn(torch.from_numpy(a), torch.from_numpy(g), extra=1, grid=(2, 3), **kw).numpy()
        assert got_np.shape == (3, 2, 2, 3)
        np.testing.assert_allclose(got_np, got_t, atol=1e-12)


def test_registry_lists_them_with_options_and_papers() -> None:
    assert list_methods()[-3:] == ["rollout", "gradrollout", "legrad"]
    assert get_method("rollout").options == {"head_fusion": "mean", "discard_ratio": 0.0}
    assert get_method("gradrollout").options == {} and get_method("legrad").options == {}
    for name, year in (("rollout", "2020"), ("gradrollout", "2021"), ("legrad", "2024")):
        m = get_method(name)
        assert m.kind == "attention" and m.frameworks == ("torch",) and year in m.fn.__doc__ and year in m.summary
    assert not get_method("rollout").needs_gradients and get_method("legrad").needs_gradients
    assert get_method("rollout").class_agnostic and not get_method("gradrollout").class_agnostic
    assert [n for n in list_methods() if get_method(n).class_agnostic] == ["eigencam", "kpcacam", "fem", "rollout"]


def test_bad_options_are_one_clear_error() -> None:
    a = np.full((1, 1, 1, 3, 3), 1 / 3)
    with pytest.raises(UsageError, match="head_fusion"):
        rollout(a, None, head_fusion="median", extra=1, grid=(1, 2))
    with pytest.raises(UsageError, match="discard_ratio"):
        rollout(a, None, discard_ratio=1.0, extra=1, grid=(1, 2))
