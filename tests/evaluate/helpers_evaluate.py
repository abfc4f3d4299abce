"""The tiny linear model and data the perturbation metrics' tests share."""

from __future__ import annotations

import numpy as np
import torch

H = W = 8


class Counting(torch.nn.Module):
    """A linear model, logits = <w_c, x>, that counts the inputs it sees."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(classes, 2, H, W, generator=g))
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return torch.einsum("nchw,kchw->nk", x, self.w)


def _data(n: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, H, W)).astype(np.float32)
    maps = rng.random((n, H, W)).astype(np.float32)
    maps[0, :2] = 0.5  # ties: raster order decides
    targets = rng.integers(0, 3, n)
    return x, maps, targets


def _logit(w: np.ndarray, x: np.ndarray, t: int) -> float:
    return float((w[t] * x).sum())
