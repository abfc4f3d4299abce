"""The zoo's registry: a model is one entry (registered, then loaded, listed and built for
listing with no other change), a Keras twin is data on the entry, unknown names suggest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import layerscope
from layerscope.errors import UsageError
from layerscope.info import RANDOM_WEIGHTS, ModelInfo, model_info
from layerscope.models import _registry
from layerscope.models._registry import ModelEntry, register


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def _init(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


@pytest.fixture
def toy_entry(tmp_path: Path) -> Iterator[ModelEntry]:
    weights = tmp_path / "toy.pth"
    state = Toy().state_dict()
    state = {k: torch.full_like(v, 0.5) for k, v in state.items()}
    torch.save(state, weights)
    entry = ModelEntry(
        "toy",
        "a two-layer toy",
        Toy,
        _init,
        lambda: ModelInfo(name="toy", class_names=("a", "b"), output="logits"),
        default_weights="default",
        published={"default": lambda: weights},
    )
    register(entry)
    try:
        yield entry
    finally:
        for table in (_registry.ENTRIES, _registry.MODELS, _registry.DEFAULT_WEIGHTS):
            table.pop("toy", None)


def test_one_entry_is_a_whole_model(toy_entry: ModelEntry) -> None:
    assert "toy" in layerscope.list_models() and _registry.MODELS["toy"] == "a two-layer toy"
    model = layerscope.load_model("toy")
    assert torch.equal(model.fc.weight, torch.full((2, 2), 0.5))  # the published file
    assert model_info(model).class_names == ("a", "b")
    a, b = layerscope.load_model("toy", "random", seed=3), layerscope.load_model("toy", "random", seed=3)
    assert torch.equal(a.conv.weight, b.conv.weight) and model_info(a).warning == RANDOM_WEIGHTS
    listed = layerscope.models.build_for_listing("toy")
    assert not listed.conv.weight.is_meta and not listed.conv.weight.any()  # zeros, no init
    with pytest.raises(UsageError, match="toy has no 'imagenet' weights"):
        layerscope.load_model("toy", "imagenet")
    with pytest.raises(UsageError, match=r"unknown Keras model 'toy' \(PyTorch only\)\. Keras models: vgg16, "):
        layerscope.load_model("toy", "random", framework="keras")
    with pytest.raises(ValueError, match="registered twice"):
        register(toy_entry)


def test_keras_twins_are_data_on_the_entries() -> None:
    assert _registry.keras_names() == ["vgg16", "vgg16-cifar10"]
    vgg, recipe = _registry.ENTRIES["vgg16"].keras, _registry.ENTRIES["vgg16-cifar10"].keras
    assert vgg is not None and vgg.include_top and vgg.base is None and len(vgg.class_names()) == 1000
    assert recipe is not None and not recipe.include_top and recipe.base == "vgg16" and len(recipe.class_names()) == 10


def test_an_unknown_model_suggests_the_close_ones() -> None:
    with pytest.raises(UsageError) as e:
        layerscope.load_model("vgg19")
    assert str(e.value) == (
        "unknown model 'vgg19'. Did you mean vgg16, vgg16-cifar10? Built-in models: demo, demo-vit, "
        "demo-detector, vgg16, vgg16-cifar10, resnet50; or module.path:callable, torchvision:NAME, timm:NAME, "
        "hf:REPO-ID"
    )
