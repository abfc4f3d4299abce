"""layerscope.targets.text: a CLIP prompt explained (issue 19 part 3), checked on a tiny random
CLIPModel against the model's own ``logits_per_image`` and an independent Grad-CAM (forward
hooks + ``torch.autograd.grad`` + the token reshape written here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import layerscope
from helpers_clip import LAYERS, clip_folder, tiny_clip, tiny_tokenizer
from layerscope.errors import UsageError
from layerscope.targets import text

transformers = pytest.importorskip("transformers")

PROMPTS = ["a photo of a cat", "a dog", "the red square"]


@pytest.fixture(scope="module")
def clip() -> object:
    return tiny_clip()


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> object:
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _logits(clip: object, x: torch.Tensor, tok: object, prompts: list[str]) -> torch.Tensor:
    enc = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return clip(pixel_values=x, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits_per_image


def _independent_gradcam(clip: object, x: torch.Tensor, tok: object, prompts: list[str], j: int) -> list[np.ndarray]:
    """Grad-CAM of logits_per_image[0, j] at each block's first LayerNorm: the tokens
    (1, 17, 16) without the class token as a 4×4 grid, weights the grid-mean gradient."""
    enc = tok(prompts, padding=True, return_tensors="pt")
    kept: dict[str, torch.Tensor] = {}
    handles = [clip.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: kept.__setitem__(p, o)) for p in LAYERS]
    try:
        out = clip(pixel_values=x, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(out.logits_per_image[0, j], [kept[p] for p in LAYERS])
    maps = []
    for p, g in zip(LAYERS, grads, strict=True):
        a = kept[p].detach()[0, 1:].reshape(4, 4, -1).permute(2, 0, 1)  # (C, 4, 4)
        gg = g[0, 1:].reshape(4, 4, -1).permute(2, 0, 1)
        w = gg.mean(dim=(1, 2))
        maps.append(torch.relu((w[:, None, None] * a).sum(0)).numpy())
    return maps


def test_the_score_is_the_models_own_logits_per_image(clip: object, tok: object) -> None:
    x = _images(3)
    want = _logits(clip, x, tok, PROMPTS)
    exp = layerscope.explain(clip, x, target=text(PROMPTS, model=clip, tokenizer=tok))  # prompt i for image i
    assert np.abs(exp.scores - want.diagonal().numpy()).max() <= 1e-5
    assert np.abs(exp.outputs - want.numpy()).max() <= 1e-5
    assert list(exp.targets) == [0, 1, 2] and exp.target_kind == "text"
    assert exp.class_names == [f'"{p}"' for p in PROMPTS]
    one = layerscope.explain(clip, x, target=text("a dog", model=clip, tokenizer=tok))  # one prompt for every image
    assert np.abs(one.scores - _logits(clip, x, tok, ["a dog"])[:, 0].numpy()).max() <= 1e-5
    np.testing.assert_allclose(one.probabilities, 1.0)


def test_each_prompts_maps_equal_an_independent_gradcam(clip: object, tok: object) -> None:
    x = _images(1, seed=1)
    exps = layerscope.explain_many(clip, x, targets=text(PROMPTS, model=clip, tokenizer=tok))
    assert [e.class_name(0) for e in exps] == [f'"{p}"' for p in PROMPTS]
    logits = _logits(clip, x, tok, PROMPTS)[0]
    for j, exp in enumerate(exps):
        assert exp.layers == LAYERS
        assert abs(float(exp.scores[0]) - float(logits[j])) <= 1e-5
        np.testing.assert_allclose(exp.probabilities[0], torch.softmax(logits, 0)[j].item(), atol=1e-5)
        for layer, want in zip(LAYERS, _independent_gradcam(clip, x, tok, PROMPTS, j), strict=True):
            assert want.max() > 1e-3 and np.abs(exp.cams[layer][0] - want).max() <= 1e-4, (j, layer)
    assert not np.allclose(exps[0].cams[LAYERS[0]], exps[1].cams[LAYERS[0]])  # two prompts, two maps


def test_one_forward_and_one_backward_for_every_block_and_prompt(
    clip: object, tok: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = text(PROMPTS, model=clip, tokenizer=tok)  # the text tower runs here, once, without gradients
    calls = {"grad": 0, "vision": 0, "text": 0}
    real_grad = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> object:
        calls["grad"] += 1
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    hooks = [
        clip.vision_model.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1)),
        clip.text_model.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1)),
    ]
    try:
        exps = layerscope.explain_many(clip, _images(1), targets=target)
    finally:
        for h in hooks:
            h.remove()
    assert len(exps) == len(PROMPTS) and all(e.layers == LAYERS for e in exps)
    assert calls == {"grad": 1, "vision": 1, "text": 0}


def test_tokenizer_processor_input_ids_and_the_models_folder_agree(tmp_path: Path, tok: object) -> None:
    folder = clip_folder(tmp_path)
    model = layerscope.load_model(f"hf:{folder}")
    assert type(model).__name__ == "CLIPModel"
    from_folder = text(PROMPTS, model=model)  # the folder's own tokenizer
    processor = transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessor(), tokenizer=tok)
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    for other in (
        text(PROMPTS, model=model, tokenizer=tok),
        text(PROMPTS, model=model, tokenizer=processor),
        text(PROMPTS, model=model, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]),
    ):
        torch.testing.assert_close(other.embeddings, from_folder.embeddings, rtol=0, atol=1e-6)
    ids_only = text(input_ids=enc["input_ids"][1:2, :4], model=model)
    assert ids_only.labels == ["tokens 0"]


def test_labels_are_quoted_and_cut_and_captions_say_text(clip: object, tok: object) -> None:
    long = "a very long prompt about a small cat sitting on a red square mat"
    exp = layerscope.explain(clip, _images(1), target=text(long, model=clip, tokenizer=tok))
    label = exp.class_name(0)
    assert label.startswith('"a very long') and label.endswith('…"') and len(label) == 42
    caption = exp.caption(LAYERS[-1])[1]
    assert caption.startswith(f"Text: {label} (logit {exp.scores[0]:.2f})") and "Grad-CAM" in caption


def test_mistakes_are_one_clear_error(clip: object, tok: object) -> None:
    vit = transformers.ViTForImageClassification(
        transformers.ViTConfig(
            image_size=32, patch_size=8, num_labels=3, **{"hidden_size": 16, "intermediate_size": 32}
        )
    )
    with pytest.raises(UsageError, match="CLIP model"):
        text("a cat", model=vit, tokenizer=tok)
    with pytest.raises(UsageError, match="empty"):
        text(["a cat", "  "], model=clip, tokenizer=tok)
    with pytest.raises(UsageError, match="no prompt"):
        text([], model=clip, tokenizer=tok)
    with pytest.raises(UsageError, match="tokenizer="):
        text("a cat", model=clip)  # a model built in Python has no folder to read a tokenizer from
    with pytest.raises(UsageError, match="3 prompts for 2 images"):
        layerscope.explain(clip, _images(2), target=text(PROMPTS, model=clip, tokenizer=tok))
    with pytest.raises(UsageError, match="another model"):
        layerscope.explain(tiny_clip(seed=1), _images(1), target=text("a cat", model=clip, tokenizer=tok))
    with pytest.raises(UsageError, match="gradient methods"):
        layerscope.explain(clip, _images(1), method="scorecam", target=text("a cat", model=clip, tokenizer=tok))


def test_making_the_target_leaves_the_model_as_it_was(tok: object) -> None:
    model = tiny_clip().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    text(PROMPTS, model=model, tokenizer=tok)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_gradient_weighted_rollout_explains_a_prompt_over_the_vision_blocks(clip: object, tok: object) -> None:
    exp = layerscope.explain(clip, _images(1, 5), method="gradrollout", target=text("a cat", model=clip, tokenizer=tok))
    assert exp.layers == [p.rsplit(".", 1)[0] for p in LAYERS]  # not the text tower's blocks
    assert not any(exp.flat[b].any() for b in exp.layers)
