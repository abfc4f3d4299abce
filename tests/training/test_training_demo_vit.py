"""Training the demo ViT (:mod:`layerscope.training.demo_vit`): a few seeded steps are
deterministic, reduce the loss and write a file that loads as the model."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from layerscope.models import demo_vit  # noqa: E402
from layerscope.training import demo as shared  # noqa: E402
from layerscope.training import demo_vit as training  # noqa: E402


def test_training_is_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    kwargs = {"steps": 3, "batch_size": 8, "pool": 24, "progress": False}
    training.train(tmp_path / "a.safetensors", **kwargs)
    training.train(tmp_path / "b.safetensors", **kwargs)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    a = load_file(tmp_path / "a.safetensors")
    assert a.keys() == demo_vit.DemoViT().state_dict().keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]
    assert isinstance(demo_vit.build(tmp_path / "a.safetensors"), demo_vit.DemoViT)


def test_a_few_steps_reduce_the_loss() -> None:
    """Steps on one fixed batch of the training data (its loss measured in eval mode, fp32)."""
    with shared.deterministic(1):
        images, labels = shared.make_pool(16, 0, progress=False)
        x, y = shared.sampler(images, labels, 16, 0)()
        model = demo_vit.DemoViT()
        demo_vit.init_demo_vit_(model, 0)

        def loss() -> float:
            model.eval()
            with torch.no_grad():
                return float(torch.nn.functional.cross_entropy(model(x), y))

        before = loss()
        shared.fit(model, lambda: (x, y), 20, 1e-3, 0.0, "fp32", 0, False, "test")
        after = loss()
    assert after < before - 0.1


def test_mean_pooled_variant_trains_and_records_its_head(tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    out = tmp_path / "avg.safetensors"
    training.train(out, steps=2, batch_size=8, pool=16, progress=False, global_pool="avg")
    model = demo_vit.DemoViT(global_pool="avg")
    with safe_open(out, "pt") as f:
        assert set(f.keys()) == set(model.state_dict()) and "fc_norm.weight" in f.keys()
        settings = json.loads(f.metadata()["layerscope_demo_vit"])
    assert settings["global_pool"] == "avg" and settings["reg_tokens"] == demo_vit.REGISTERS


def test_the_shipped_weights_record_the_command_lines_defaults() -> None:
    """``python -m layerscope.training.demo_vit --train`` with its defaults made the shipped file."""
    import json

    from safetensors import safe_open

    if not demo_vit.DEFAULT_WEIGHTS.is_file():
        pytest.skip("the demo ViT's weights are not trained yet")
    with safe_open(demo_vit.DEFAULT_WEIGHTS, "pt") as f:
        settings = json.loads(f.metadata()["layerscope_demo_vit"])
    defaults = {"steps": training.STEPS, "lr": training.LR, "threads": training.THREADS}
    assert {k: settings[k] for k in defaults} == defaults
    assert settings["precision"] == training.PRECISION and settings["global_pool"] == demo_vit.GLOBAL_POOL
    assert settings["reg_tokens"] == demo_vit.REGISTERS and settings["weight_decay"] == training.WEIGHT_DECAY
