"""``--model-output KEY`` on ``tour`` and ``grid`` (issue 11 item 4): a ``module:callable``
model that returns a dict without ``logits`` (or a tuple whose scores are not first) is
explained through the chosen output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import cli

MODULE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, as_tuple):
        super().__init__()
        self.as_tuple = as_tuple
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)
        with torch.no_grad():
            self.head.weight.zero_()  # the scores are the bias: class 3, p = softmax(bias)[3]
            self.head.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 4.0, 0.5]))

    def forward(self, x):
        h = torch.relu(self.conv(x))
        scores = self.head(h.mean(dim=(2, 3)))
        return (h, scores) if self.as_tuple else {"features": h, "scores": scores}


def build_dict():
    torch.manual_seed(0)
    return Net(False)


def build_tuple():
    torch.manual_seed(0)
    return Net(True)
"""

BIAS = np.array([0.0, 1.0, 2.0, 4.0, 0.5])
P3 = float(np.exp(BIAS[3]) / np.exp(BIAS).sum())


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "lsmo_models.py").write_text(MODULE)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("lsmo_models", None)


def _tour(*extra: str) -> int:
    return cli.main(["tour", "in.png", "--model", "lsmo_models:build_dict", "--size", "32", *extra])


def test_tour_without_model_output_names_the_keys(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _tour("-o", "a.npz") != 0
    err = capsys.readouterr().err
    assert "without 'logits'" in err and "features" in err and "scores" in err
    assert not (setup / "a.npz").exists()


@pytest.mark.parametrize(("model", "key"), [("lsmo_models:build_dict", "scores"), ("lsmo_models:build_tuple", "1")])
def test_tour_with_model_output(setup: Path, model: str, key: str) -> None:
    rc = cli.main(["tour", "in.png", "--model", model, "--size", "32", "--model-output", key, "-o", "a.npz"])
    assert rc == 0
    data = np.load(setup / "a.npz", allow_pickle=False)
    assert data["targets"].tolist() == [3]
    assert float(data["probabilities"][0]) == pytest.approx(P3, abs=1e-5)
    assert float(data["scores"][0]) == pytest.approx(BIAS[3], abs=1e-6)


def test_tuple_default_is_the_first_tensor_and_fails_clearly(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["tour", "in.png", "--model", "lsmo_models:build_tuple", "--size", "32", "-o", "a.npz"])
    assert rc != 0
    assert "expected (N, classes)" in capsys.readouterr().err


def test_grid_with_model_output(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["grid", "in.png", "--model", "lsmo_models:build_dict", "--size", "32", "--methods", "gradcam,eigencam"]
    assert cli.main([*base, "-o", "g.png"]) != 0
    assert "without 'logits'" in capsys.readouterr().err
    assert cli.main([*base, "--model-output", "scores", "-o", "g.png"]) == 0
    assert Image.open(setup / "g.png").size[0] > 0


def test_explain_many_passes_output(setup: Path) -> None:
    from layerscope.grid import explain_many
    from layerscope.models import load_model

    model = load_model("lsmo_models:build_dict", size=32)
    exps = explain_many(model, np.zeros((32, 32, 3), np.uint8), ["gradcam"], targets=[1, 3], output="scores")
    assert [int(e.targets[0]) for e in exps] == [1, 3]
    np.testing.assert_allclose(exps[0].outputs[0], BIAS, atol=1e-6)
