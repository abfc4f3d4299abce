"""Shared by the method tests: a narrow VGG16 layout with a non-linear head, its fixtures,
and the comparison helpers (independent of layerscope's capture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import minmax as norm
from conftest import random_biases_
from layerscope.info import ModelInfo, attach_info, model_info
from layerscope.models import vgg

TOL = 1e-4
WIDTHS = (8, 16, 16, 32, 32)
TARGETS = [3, 5]
GRADIENT = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise", "eigengradcam"]
#: Finer-CAM and ShapleyCAM are gradient methods too, with a score or Hessian of their own
#: (tests/methods/test_new_methods.py); FEM and KPCA-CAM need activations only.
NEW = ["finercam", "shapleycam", "kpcacam", "fem"]
ALL = [*GRADIENT, "eigencam", "scorecam", "ablationcam", "guided-backprop", "guided-gradcam", *NEW]


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """These tensors are tiny: on a busy machine torch's thread pool costs far more than it
    saves (measured: 0.6 s vs 0.004 s for one 13-layer Grad-CAM on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SmallVGG(nn.Module):
    """VGG16's 13-conv layout, narrow; a non-linear head so the methods really differ.

    ``functional=True`` applies the head's ReLU with ``F.relu`` instead of its module.
    """

    def __init__(self, inplace: bool = False, functional: bool = False) -> None:
        super().__init__()
        self.features, names = vgg.make_features(widths=WIDTHS)
        attach_info(self, ModelInfo(layers=names))  # recorded beside the model, nothing set on it
        for m in self.features:
            if isinstance(m, nn.ReLU):
                m.inplace = inplace
        self.functional = functional
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Sequential(nn.Linear(WIDTHS[-1] * 4, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head[0](torch.flatten(self.pool(self.features(x)), 1))
        h = F.relu(h) if self.functional else self.head[1](h)
        return self.head[2](h)


@pytest.fixture(scope="module")
def net() -> SmallVGG:
    torch.manual_seed(0)
    model = SmallVGG()
    vgg.init_vgg_(model, seed=0)
    random_biases_(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(20.0)  # logits of a useful size
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def xs(x: torch.Tensor) -> torch.Tensor:
    """A smaller input for the methods that cost many passes."""
    return x[:, :, 8:40, 8:40].contiguous()


def paths(model: nn.Module) -> dict[str, str]:
    return dict(model_info(model).layers)


def assert_same(ours: np.ndarray, ref: np.ndarray, what: str = "") -> None:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, what
    assert np.isfinite(ours).all(), what
    err = np.abs(norm(ours) - norm(ref)).max()
    assert err <= TOL, f"{what}: max difference {err:.2e} after normalisation"


def layer_ag(model: nn.Module, x: torch.Tensor, path: str, targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A layer's activation and gradient, with plain hooks (independent of layerscope)."""
    store: dict[str, torch.Tensor] = {}
    h = dict(model.named_modules())[path].register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        out = model(x)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(out[range(len(targets)), targets].sum(), store["a"])
    return store["a"].detach().numpy().astype(np.float64), g.numpy().astype(np.float64)


class _CountBackward(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, t):  # type: ignore[no-untyped-def, override]
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        _CountBackward.calls += 1
        return g


class CountPasses(nn.Module):
    """Wraps a model; counts forward calls, images forwarded, and backward passes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        attach_info(self, ModelInfo(layers={k: f"model.{v}" for k, v in paths(model).items()}))
        self.forwards = self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        self.images += len(x)
        return _CountBackward.apply(self.model(x))


# --- tiny hand-weighted nets ------------------------------------------------------------------

X_TINY = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])


class _TinyRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, -1.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def tiny_relu_net() -> nn.Module:
    return _TinyRelu().eval()


class _TinyFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            w0 = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
            w1 = torch.tensor([[0.5, 1.0], [-2.0, 3.0]])
            self.fc.weight.copy_(torch.stack([torch.cat([w0.flatten(), w1.flatten()]), torch.zeros(8)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


def tiny_flatten_net() -> nn.Module:
    return _TinyFlatten().eval()
