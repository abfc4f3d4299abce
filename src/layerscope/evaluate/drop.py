"""Average Drop / Average Increase (Grad-CAM++): the image times its map, re-scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.evaluate import _engine as E
from layerscope.evaluate._registry import Batch, Column, Metric, register
from layerscope.resize import resize_bilinear


@dataclass
class DropIncrease:
    """Average Drop and Average Increase, per image (average them over images yourself, or
    read :attr:`average_drop` and :attr:`average_increase`).

    Attributes:
        drop: ``([M,] N)`` ``max(0, Y − O) / Y`` per image (a fraction; the paper's % is × 100).
        increase: ``([M,] N)`` bool, ``O > Y``.
        original: ``(N,)`` ``Y``, the score of the whole image.
        masked: ``([M,] N)`` ``O``, the score of the image times the map.
    """

    drop: np.ndarray
    increase: np.ndarray
    original: np.ndarray
    masked: np.ndarray

    @property
    def average_drop(self) -> np.ndarray:
        """Mean drop over images (lower is better)."""
        return self.drop.mean(axis=-1)

    @property
    def average_increase(self) -> np.ndarray:
        """Share of images whose score increases (higher is better)."""
        return self.increase.mean(axis=-1)


def average_drop_increase(
    model: Any,
    x: Any,
    maps: Any,
    targets: Any,
    *,
    output: str | None = "logits",
    score: str = "probability",
    perturb_batch: int = 256,
    progress: Any = False,
) -> DropIncrease:
    """Average Drop and Average Increase in confidence (Chattopadhay, Sarkar, Howlader and
    Balasubramanian, "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks", WACV 2018).

    The image is multiplied by its map, min-max normalised to [0, 1] at the map's own
    resolution (``(m − min) / (max − min + 1e-8)``) and enlarged to the input: the
    "explanation map" :math:`E = L^c \\circ I`. With :math:`Y` the target's score on the
    image and :math:`O` on :math:`E`, Average Drop is
    :math:`\\frac1N\\sum_i \\max(0, Y_i - O_i) / Y_i` (× 100 in the paper; lower is better)
    and Average Increase the share of images with :math:`O_i > Y_i` (higher is better).
    The product is taken in the model's input space and ``Y + 1e-7`` divides, as torchcam's
    ``ClassificationMetric``.

    Cost: one pass per image, plus one per image and map.

    Args:
        model, x, maps, targets, output, score, perturb_batch, progress: as
            :func:`deletion_insertion`.

    Returns:
        A :class:`DropIncrease`.
    """
    import torch

    ctx = E.make_context(model, x, targets, output, score)
    map_list, single = E.as_map_list(maps, ctx.n)
    n, size, dev = ctx.n, ctx.size, ctx.x.device
    bar = E.progress_bar(n * (1 + len(map_list)), "average drop/increase", progress)
    idx = torch.arange(n, device=dev)
    original = E.run_jobs(n, lambda sl: (ctx.x[sl], idx[sl]), ctx, perturb_batch, bar)

    def make(sl: slice) -> tuple[Any, Any]:
        jobs = np.arange(sl.start, sl.stop)
        parts = []
        for m in np.unique(jobs // n):
            img = jobs[jobs // n == m] % n
            a = torch.as_tensor(map_list[m][img], device=dev, dtype=torch.float32)
            a = a - a.amin(dim=(1, 2), keepdim=True)
            a = a / (a.amax(dim=(1, 2), keepdim=True) + 1e-8)
            up = resize_bilinear(a, size)
            it = torch.as_tensor(img, device=dev)
            parts.append((up.unsqueeze(1) * ctx.x[it], it))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    masked = E.run_jobs(n * len(map_list), make, ctx, perturb_batch, bar).reshape(len(map_list), n)
    E.close_bar(bar, progress)
    y = original.astype(np.float64)
    drop = np.maximum(0.0, y - masked) / (y + 1e-7)
    increase = masked > original
    if single:
        return DropIncrease(drop[0], increase[0], original, masked[0])
    return DropIncrease(drop, increase, original, masked)


def _score(batch: Batch) -> dict[str, Any]:
    d = average_drop_increase(batch.model, batch.x, batch.maps, batch.targets, **batch.perturbation_kw())
    return {"average_drop": d.drop, "average_increase": d.increase.astype(np.float64)}


register(
    Metric(
        "drop",
        (Column("average_drop", "Average Drop", "lower"), Column("average_increase", "Average Increase", "higher")),
        _score,
        lambda n_images, n_layers, pixels, o: {"drop/increase": n_images * (1 + n_layers)},
        order=40,
    )
)
