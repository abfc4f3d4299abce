"""layerscope.targets.text and similar_to on a model with OpenCLIP's interface and layout
(``encode_image``, ``encode_text``, ``logit_scale``; ``visual.transformer.resblocks.i.ln_1``),
checked against the model's own normalised logits and an independent Grad-CAM (forward hooks
+ ``torch.autograd.grad`` + the token reshape written here). OpenCLIP itself needs
torchvision, which does not import beside this project's torch; the model here is laid out
as its ``CLIP``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerscope
from helpers_clip import TinyOpenCLIP, open_clip_tokenizer
from layerscope.errors import UsageError
from layerscope.targets import is_dual_encoder, similar_to, text

PROMPTS = ["a photo of a cat", "a dog"]
BLOCKS = [f"visual.transformer.resblocks.{i}.ln_1" for i in range(2)]


@pytest.fixture(scope="module")
def clip() -> TinyOpenCLIP:
    return TinyOpenCLIP()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _own_logits(clip: TinyOpenCLIP, x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    image, txt, scale = clip(x, open_clip_tokenizer(prompts))  # OpenCLIP's forward: normalised features
    return scale * image @ txt.T


def _independent_gradcam(clip: TinyOpenCLIP, x: torch.Tensor, prompt: str) -> list[np.ndarray]:
    kept: dict[str, torch.Tensor] = {}
    hooks = [clip.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: kept.__setitem__(p, o)) for p in BLOCKS]
    try:
        logit = _own_logits(clip, x, [prompt])[0, 0]
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(logit, [kept[p] for p in BLOCKS])
    maps = []
    for p, g in zip(BLOCKS, grads, strict=True):
        a = kept[p].detach()[0, 1:].reshape(4, 4, -1).permute(2, 0, 1)  # 16 patch tokens as a 4×4 grid
        w = g[0, 1:].reshape(4, 4, -1).permute(2, 0, 1).mean(dim=(1, 2))
        maps.append(torch.relu((w[:, None, None] * a).sum(0)).numpy())
    return maps


def test_default_layers_are_the_vision_blocks_attention_inputs(clip: TinyOpenCLIP) -> None:
    assert is_dual_encoder(clip)
    exp = layerscope.explain(clip, _images(1), target=text("a cat", model=clip, tokenizer=open_clip_tokenizer))
    assert exp.layers == BLOCKS  # the text tower's blocks (transformer.resblocks.*) are left out
    assert all(exp.cams[b].shape == (1, 4, 4) for b in BLOCKS)  # 17 tokens: the class token and a 4×4 grid


def test_the_score_is_the_models_own_logit_and_maps_equal_an_independent_gradcam(clip: TinyOpenCLIP) -> None:
    x = _images(2, seed=1)
    want = _own_logits(clip, x, PROMPTS).detach()
    exp = layerscope.explain(clip, x, target=text(PROMPTS, model=clip, tokenizer=open_clip_tokenizer))
    assert np.abs(exp.scores - want.diagonal().numpy()).max() <= 1e-5  # prompt i for image i
    assert np.abs(exp.outputs - want.numpy()).max() <= 1e-5
    exps = layerscope.explain_many(clip, x[:1], targets=text(PROMPTS, model=clip, tokenizer=open_clip_tokenizer))
    for prompt, e in zip(PROMPTS, exps, strict=True):
        for layer, ref in zip(BLOCKS, _independent_gradcam(clip, x[:1], prompt), strict=True):
            assert ref.max() > 0  # not flat: the check can fail
            np.testing.assert_allclose(e.cams[layer][0], ref, rtol=1e-4, atol=1e-6 * ref.max())
    assert not np.allclose(exps[0].cams[BLOCKS[-1]], exps[1].cams[BLOCKS[-1]])  # two prompts, two maps


def test_similar_to_uses_encode_image(clip: TinyOpenCLIP) -> None:
    x, ref = _images(1, seed=2), _images(1, seed=3)
    exp = layerscope.explain(clip, x, target=similar_to(ref[0], model=clip))
    with torch.no_grad():
        a, b = clip.encode_image(x, normalize=True), clip.encode_image(ref, normalize=True)
    assert abs(float(exp.scores[0]) - float(a @ b.T)) <= 1e-5


def test_a_tokenizer_that_returns_no_ids_is_a_clear_error(clip: TinyOpenCLIP) -> None:
    with pytest.raises(UsageError, match=r"not \(K, L\) token ids"):
        text("a cat", model=clip, tokenizer=lambda prompts: {"input_ids": prompts})
    with pytest.raises(UsageError, match="tokenizer"):
        text("a cat", model=clip)  # no tokenizer and none known for the model


def test_gradient_weighted_rollout_runs_over_the_vision_blocks(clip: TinyOpenCLIP) -> None:
    """gradrollout on a CLIP prompt: the image tower's blocks (the text tower does not run
    in the capture), their ``nn.MultiheadAttention`` weights followed by the gradient."""
    exp = layerscope.explain(
        clip, _images(1, 4), method="gradrollout", target=text("a cat", model=clip, tokenizer=open_clip_tokenizer)
    )
    assert exp.layers == [b.rsplit(".", 1)[0] for b in BLOCKS]
    assert not any(exp.flat[b].any() for b in exp.layers)


def test_attention_rollout_of_a_prompt_equals_abnar_and_zuidemas_formula(clip: TinyOpenCLIP) -> None:
    """rollout is class-agnostic: the prompt only says how to run the model (its image
    tower). The maps equal the rollout of the vision blocks' weights taken here."""
    x = _images(2, 6)
    exp = layerscope.explain(clip, x, method="rollout", target=text(PROMPTS, model=clip, tokenizer=open_clip_tokenizer))
    v = clip.visual
    with torch.no_grad():
        t = v.conv1(x).flatten(2).transpose(1, 2)
        t = torch.cat([v.class_embedding.expand(2, 1, -1), t], dim=1) + v.positional_embedding
        t = v.ln_pre(t)
        r = np.broadcast_to(np.eye(17), (2, 17, 17))
        for i, block in enumerate(v.transformer.resblocks):
            y = block.ln_1(t)
            a = block.attn(y, y, y, need_weights=True, average_attn_weights=False)[1].double().numpy()
            a_hat = 0.5 * a.mean(axis=1) + 0.5 * np.eye(17)
            r = (a_hat / a_hat.sum(-1, keepdims=True)) @ r
            got = exp.cams[f"visual.transformer.resblocks.{i}"]
            assert np.abs(got - r[:, 0, 1:].reshape(2, 4, 4)).max() <= 1e-5
            t = block(t)
    assert np.abs(exp.scores - _own_logits(clip, x, PROMPTS).detach().diagonal().numpy()).max() <= 1e-5
