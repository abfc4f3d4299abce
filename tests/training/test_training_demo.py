"""Training the demo model (:mod:`layerscope.training.demo`): batch norm folds exactly into
the convs, and training is deterministic and writes its file atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from layerscope.models import demo  # noqa: E402
from layerscope.training import demo as training  # noqa: E402


def test_batchnorm_folds_exactly() -> None:
    model = demo.DemoNet()
    demo.init_demo_(model, 0)
    net = training._TrainingNet(model)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.train()
        for k in range(3):
            net(x * (1.0 + 0.1 * k))
        for _, bn in net.pairs:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        net.eval()
        before = net(x)
        after = net.fold()(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_training_is_deterministic_and_atomic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    kwargs = {"steps": 3, "batch_size": 8, "pool": 24, "progress": False}
    stale = tmp_path / ".a.safetensors.killed.part"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (0, 0))
    training.train(tmp_path / "a.safetensors", **kwargs)
    training.train(tmp_path / "b.safetensors", **kwargs)
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]
    assert isinstance(demo.build(tmp_path / "a.safetensors"), demo.DemoNet)
