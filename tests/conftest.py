"""Shared fixtures: tiny hand-made models and generated images (everything offline)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from layerscope.models import vgg

# One setting for the whole session (tests used to set it one by one): the tiny test nets run
# fastest single-threaded, and a 2-core CI box shared with other jobs is not oversubscribed.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def vgg16_random() -> nn.Module:
    """A seeded random-weight VGG16 with torchvision's layout (in-place ReLUs)."""
    torch.manual_seed(0)
    model = vgg.VGG16()
    vgg.init_vgg_(model, seed=0)
    random_biases_(model)
    return model.eval()


def random_biases_(model: nn.Module, seed: int = 1) -> None:
    """Seeded N(0, 0.05) biases for every conv and linear layer (VGG's init zeroes them), so
    no layer's map is trivially flat."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0.0, 0.05, generator=gen)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``layerscope ARGS`` in this process: (exit code, stdout, stderr)."""
    from layerscope import cli

    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def vgg16(vgg16_random: nn.Module) -> nn.Module:
    """A fresh copy per test, so a test that changes it cannot affect another."""
    return copy.deepcopy(vgg16_random)


def not_inplace(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ReLU made non-in-place."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return out


@pytest.fixture
def photo() -> np.ndarray:
    """A 64×80 RGB test picture with structure (gradients and a bright square)."""
    rng = np.random.default_rng(0)
    h, w = 64, 80
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 90.0)], axis=2)
    img[20:40, 30:55] = (250, 240, 30)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class TinyNet(nn.Module):
    """conv(1→2, 1×1, weights [1, −1], no bias) → global mean → linear(2→2).

    For input x (h×w): A0 = x, A1 = −x; y0 = 2·mean(A0) + 1·mean(A1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def tiny() -> TinyNet:
    return TinyNet().eval()


def minmax(m: np.ndarray) -> np.ndarray:
    """Each ``(h, w)`` map of ``(..., h, w)`` scaled to [0, 1] in float64; a flat map → zeros."""
    m = np.asarray(m, np.float64)
    lo = m.min(axis=(-2, -1), keepdims=True)
    rng = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(rng > 0, (m - lo) / np.where(rng > 0, rng, 1), 0.0)


def numpy_gradcam(a: torch.Tensor, g: torch.Tensor) -> np.ndarray:
    """Grad-CAM from an ``(N, C, h, w)`` activation and its gradient, in float64 numpy:
    ``ReLU(Σ_k mean_ij(g_k) · a_k)`` — the independent reference of the capture tests."""
    a64, g64 = a.detach().double().numpy(), g.detach().double().numpy()
    return np.maximum(np.einsum("nc,nchw->nhw", g64.mean(axis=(2, 3)), a64), 0)


def hooked_gradcam(model: nn.Module, paths: list[str], run, score) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Grad-CAM at ``paths`` the plain way: forward hooks keep the outputs of ``run()``,
    ``torch.autograd.grad(score(output))`` gives their gradients, :func:`numpy_gradcam` the maps."""
    kept: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: kept.__setitem__(p, o)) for p in paths]
    try:
        out = run()
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(score(out), [kept[p] for p in paths])
    return {p: numpy_gradcam(kept[p], g) for p, g in zip(paths, grads, strict=True)}
