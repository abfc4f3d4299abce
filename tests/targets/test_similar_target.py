"""layerscope.targets.similar_to: the cosine similarity of image embeddings (issue 19 part 3),
on a tiny random CLIPModel and on a plain embedding net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import layerscope
from helpers_clip import LAYERS, tiny_clip
from layerscope.errors import UsageError
from layerscope.inputs import Preprocess
from layerscope.targets import similar_to

pytest.importorskip("transformers")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)


class Embedder(nn.Module):
    """A conv, a pooled projection: (N, 3, H, W) -> (N, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.proj = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_the_score_is_the_cosine_of_clips_image_embeddings() -> None:
    clip = tiny_clip()
    x, ref = _images(2), _images(1, seed=5)
    with torch.no_grad():
        feats = clip.get_image_features(pixel_values=torch.cat([x, ref])).pooler_output
    want = _cos(feats[:2], feats[2:])[:, 0]
    exp = layerscope.explain(clip, x, target=similar_to(ref[0], model=clip))
    assert np.abs(exp.scores - want.numpy()).max() <= 1e-5
    assert exp.target_kind == "image" and exp.class_name(0) == "reference image"
    assert exp.caption(LAYERS[-1])[1].startswith(f"Similar to: reference image (cos {exp.scores[0]:.2f})")


def test_an_image_against_itself_scores_one_and_its_maps_are_not_flat() -> None:
    clip = tiny_clip()
    x = _images(1, seed=3)
    exp = layerscope.explain(clip, x, target=similar_to(x, model=clip))
    assert abs(float(exp.scores[0]) - 1.0) <= 1e-5
    for layer in exp.layers:
        assert not exp.flat[layer][0] and exp.cams[layer][0].max() > 1e-3, layer


def test_any_model_whose_output_is_an_embedding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Embedder().eval()
    pictures = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(3)]
    Image.fromarray(pictures[0]).save(tmp_path / "ref.png")
    prep = Preprocess(size=(16, 16))
    target = similar_to([str(tmp_path / "ref.png"), pictures[1]], model=net, preprocess=prep)
    assert target.labels == ['"ref.png"', "reference 1"]
    exps = layerscope.explain_many(net, pictures[2], targets=target, preprocess=prep)
    with torch.no_grad():
        emb = net(torch.as_tensor(prep(pictures)))
    want = _cos(emb[2:], emb[:2])[0]
    assert [x.class_name(0) for x in exps] == ['"ref.png"', "reference 1"]
    np.testing.assert_allclose([float(x.scores[0]) for x in exps], want.numpy(), atol=1e-5)


def test_a_model_without_an_embedding_output_is_one_clear_error() -> None:
    seg = nn.Conv2d(3, 4, 1)
    with pytest.raises(UsageError, match=r"expected \(N, D\)"):
        similar_to(_images(1), model=seg)
    with pytest.raises(UsageError, match="no reference"):
        similar_to([], model=Embedder())
