"""layerscope.targets.region: the segmentation target (issue 11 item 4), checked on a small
FCN-style net against plain hooks + ``torch.autograd.grad`` + a numpy Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from conftest import hooked_gradcam
from conftest import minmax as norm
from layerscope.errors import UsageError
from layerscope.targets import region

TOL = 1e-4
K = 4


class FCN(nn.Module):
    """A few convs, a 1×1 classifier conv, upsampled back to the input size; ``as_dict``
    returns torchvision's ``{"out": ..., "aux": ...}``."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.c3 = nn.Conv2d(8, 16, 3, padding=1)
        self.classifier = nn.Conv2d(16, K, 1)

    def forward(self, x: torch.Tensor) -> object:
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h))
        h = torch.relu(self.c3(h))
        out = nn.functional.interpolate(self.classifier(h), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": out, "aux": out.detach() * 0} if self.as_dict else out


PATHS = ["c1", "c2", "c3", "classifier"]


def reference(model: FCN, x: torch.Tensor, c: int, mask: torch.Tensor | None) -> dict[str, np.ndarray]:
    """score = (out[:, c] * mask).sum(); Grad-CAM in numpy from hooks + autograd.grad."""

    def score(out: torch.Tensor | dict) -> torch.Tensor:
        out = out["out"] if isinstance(out, dict) else out
        m = (out.detach().argmax(dim=1) == c).float() if mask is None else mask
        return (out[:, c] * m).sum()

    return hooked_gradcam(model, PATHS, lambda: model(x), score)


@pytest.fixture
def fcn() -> FCN:
    torch.manual_seed(0)
    return FCN().eval()


def _x(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, 16, 20)


@pytest.mark.parametrize("use_mask", [False, True])
def test_region_equals_independent_gradcam_at_every_conv(fcn: FCN, use_mask: bool) -> None:
    x = _x()
    with torch.no_grad():
        pred = fcn(x).argmax(dim=1)
    c = int(pred.flatten().mode().values)  # a class the model predicts somewhere
    mask = torch.zeros(16, 20, dtype=torch.bool)
    mask[3:11, 5:17] = True
    ex = layerscope.explain(fcn, x, PATHS, target=region(c, mask.numpy() if use_mask else None))
    ref = reference(fcn, x, c, mask.float() if use_mask else None)
    assert ex.layers == PATHS
    for p in PATHS:
        assert np.abs(norm(ex.cams[p]) - norm(ref[p])).max() <= TOL, p
    assert ex.targets.tolist() == [c, c]
    with torch.no_grad():
        out = fcn(x)
        m = mask.float() if use_mask else (out.argmax(dim=1) == c).float()
        expected = (out[:, c] * m).sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(ex.scores, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ex.outputs, out.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)


def test_region_per_image_mask_and_dict_output() -> None:
    torch.manual_seed(0)
    model = FCN(as_dict=True).eval()
    x = _x()
    masks = torch.zeros(2, 16, 20)
    masks[0, :8] = 1
    masks[1, 8:] = 1
    ex = layerscope.explain(model, x, PATHS, target=layerscope.targets.region(2, masks))
    ref = reference(model, x, 2, masks)
    for p in PATHS:
        assert np.abs(norm(ex.cams[p]) - norm(ref[p])).max() <= TOL, p
    # the two images' masks differ, so do their maps
    assert np.abs(norm(ex.cams["c3"][0]) - norm(ex.cams["c3"][1])).max() > 0.05


def test_region_of_a_chosen_output() -> None:
    class Seg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = FCN()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.net(x)
            return {"boundary": out[:, :1], "seg": out}

    torch.manual_seed(0)
    model = Seg().eval()
    x = _x()
    with pytest.raises(UsageError, match="none of out, logits; give output=KEY"):
        layerscope.explain(model, x, ["net.c3"], target=region(1))
    ex = layerscope.explain(model, x, ["net.c3"], target=region(1), output="seg")
    ref = reference(model.net, x, 1, None)
    assert np.abs(norm(ex.cams["net.c3"]) - norm(ref["c3"])).max() <= TOL


def test_region_one_forward_one_backward(fcn: FCN, monkeypatch: pytest.MonkeyPatch) -> None:
    forwards, grads = [], []
    fcn.register_forward_hook(lambda *a: forwards.append(1))
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grads.append(1) or real(*a, **k))
    layerscope.explain(fcn, _x(), PATHS, target=region(1))
    assert (len(forwards), len(grads)) == (1, 1)


def test_region_errors(fcn: FCN) -> None:
    classifier = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(UsageError, match=r"\(N, K, H, W\).*target=INDEX"):
        layerscope.explain(classifier, _x(), ["0"], target=region(1))
    with pytest.raises(UsageError, match="8×8 but the model's output is 16×20"):
        layerscope.explain(fcn, _x(), PATHS, target=region(1, np.ones((8, 8), bool)))
    with pytest.raises(UsageError, match="out of range"):
        layerscope.explain(fcn, _x(), PATHS, target=region(K))
    with pytest.raises(UsageError, match="3 masks for 2 images"):
        layerscope.explain(fcn, _x(), PATHS, target=region(1, np.ones((3, 16, 20), bool)))
    with pytest.raises(UsageError, match="boolean or 0/1"):
        region(1, np.full((16, 20), 0.5))
    with pytest.raises(UsageError, match="whole number"):
        region("road")  # type: ignore[arg-type]
