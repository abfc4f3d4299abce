"""Several model inputs (issue 11 item 4): ``explain(model, (x, side))`` calls
``model(x, side)``, ``explain(model, {"pixel_values": x, ...})`` calls ``model(**inputs)``;
checked against plain hooks + ``torch.autograd.grad`` + a numpy Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from conftest import hooked_gradcam
from conftest import minmax as norm
from layerscope.errors import UsageError

TOL = 1e-4
PATHS = ["c1", "c2"]


class TwoInputs(nn.Module):
    """An image and a side vector (FiLM-style: the vector scales the features), and optional
    keyword extras: an integer tensor (a class id) and a plain Python value."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.side = nn.Linear(4, 8)
        self.embed = nn.Embedding(3, 8)
        self.head = nn.Linear(8, 5)
        self.seen: list[object] = []

    def forward(
        self, pixel_values: torch.Tensor, extra: torch.Tensor, ids: torch.Tensor | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        self.seen = [pixel_values, extra, ids, scale]
        h = torch.relu(self.c2(torch.relu(self.c1(pixel_values))))
        gate = torch.sigmoid(self.side(extra))
        if ids is not None:
            gate = gate + self.embed(ids)
        h = h * gate[:, :, None, None] * scale
        return self.head(h.mean(dim=(2, 3)))


def reference(model: nn.Module, args: tuple, kwargs: dict, targets: list[int]) -> dict[str, np.ndarray]:
    return hooked_gradcam(
        model, PATHS, lambda: model(*args, **kwargs), lambda out: out[range(len(targets)), targets].sum()
    )


@pytest.fixture
def model() -> TwoInputs:
    torch.manual_seed(0)
    return TwoInputs().eval()


def _inputs(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(n, 3, 12, 10), torch.randn(n, 4)


def test_tuple_inputs_equal_independent_gradcam(model: TwoInputs) -> None:
    x, side = _inputs()
    ex = layerscope.explain(model, (x, side), PATHS, target=[1, 3])
    ref = reference(model, (x, side), {}, [1, 3])
    for p in PATHS:
        assert np.abs(norm(ex.cams[p]) - norm(ref[p])).max() <= TOL, p
    with torch.no_grad():
        out = model(x, side)
    np.testing.assert_allclose(ex.outputs, out.numpy(), rtol=1e-5, atol=1e-6)
    # a different side input changes the explanation: it really reached the model
    ex2 = layerscope.explain(model, (x, -side), PATHS, target=[1, 3])
    assert np.abs(ex2.outputs - ex.outputs).max() > 1e-3
    # the pictures are the image tensor's, one per image; the caller's tensors are untouched
    assert len(ex.images) == 2 and ex.images[0].shape == (12, 10, 3)
    assert not x.requires_grad and not side.requires_grad
    # an activation method (no backward) takes several inputs too: the same maps as the one-input path
    e1 = layerscope.explain(model, (x, side), ["c2"], method="eigencam")

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.inner(image, side)

    e2 = layerscope.explain(Fixed().eval(), x, ["inner.c2"], method="eigencam")
    assert e1.cams["c2"].shape == (2, 12, 10)
    np.testing.assert_allclose(e1.cams["c2"], e2.cams["inner.c2"], rtol=1e-5, atol=1e-6)


def test_dict_inputs_pass_non_tensors_and_int_tensors(model: TwoInputs) -> None:
    x, side = _inputs()
    ids = torch.tensor([0, 2])
    ex = layerscope.explain(model, {"pixel_values": x, "extra": side, "ids": ids, "scale": 2.5}, PATHS)
    seen_x, seen_side, seen_ids, seen_scale = model.seen
    assert seen_scale == 2.5  # passed unchanged
    assert seen_ids.dtype == torch.long and torch.equal(seen_ids, ids)
    assert seen_x.requires_grad and seen_side.requires_grad  # private copies in the graph
    assert seen_x is not x
    targets = ex.targets.tolist()
    ref = reference(model, (), {"pixel_values": x, "extra": side, "ids": ids, "scale": 2.5}, targets)
    for p in PATHS:
        assert np.abs(norm(ex.cams[p]) - norm(ref[p])).max() <= TOL, p


def test_several_inputs_one_forward_one_backward(model: TwoInputs, monkeypatch: pytest.MonkeyPatch) -> None:
    forwards, grads = [], []
    model.register_forward_hook(lambda *a: forwards.append(1))
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grads.append(1) or real(*a, **k))
    layerscope.explain(model, _inputs(), PATHS)
    assert (len(forwards), len(grads)) == (1, 1)


def test_a_list_still_means_several_images() -> None:
    seen = []

    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape))
            return self.fc(self.c(x).mean(dim=(2, 3)))

    pics = [np.full((20, 20, 3), v, np.uint8) for v in (10, 200, 90)]
    ex = layerscope.explain(One(), pics, ["c"], preprocess=lambda ims: np.stack(ims).transpose(0, 3, 1, 2) / 255.0)
    assert seen == [(3, 3, 20, 20)] and len(ex.images) == 3
    ex = layerscope.explain(
        One(), tuple(pics), ["c"], preprocess=lambda ims: np.stack(ims).transpose(0, 3, 1, 2) / 255.0
    )
    assert len(ex.images) == 3  # a tuple of pictures (no tensor) is several images too


def test_several_inputs_errors(model: TwoInputs) -> None:
    x, side = _inputs()
    with pytest.raises(UsageError, match=r"4-D floating tensor"):
        layerscope.explain(model, (side, torch.tensor([0, 1])), PATHS)
    with pytest.raises(UsageError, match="one-pass methods"):
        layerscope.explain(model, (x, side), PATHS, method="scorecam")
    with pytest.raises(UsageError, match=r"not guided-gradcam \(guided backpropagation\)"):
        layerscope.explain(model, (x, side), PATHS, method="guided-gradcam")
