"""Perturbation CAM methods: the weight of each channel comes from re-running the model.

They need no gradient but cost forward passes: one per image, layer and channel evaluated.
``top_k`` limits the channels evaluated to the ``k`` with the largest mean activation (the
others get weight 0, as Faster Score-CAM keeps only a few channels), so every layer stays
practical; ``perturb_batch`` sets how many perturbed copies go through the model at once.

The model is reached only through the ``probe`` the capture hands over
(:class:`layerscope.capture.torch.Probe`); the math stays here:

* ``probe.input`` — the model input ``(N, C_in, H, W)``;
* ``probe.score(inputs, rows, probability)`` — the target's score of each input (the
  target of the image ``rows[m]`` it came from), the model's output or its softmax;
* ``probe.score_replaced(outputs, rows)`` — the target's output when the layer's output is
  replaced by ``outputs`` (image ``rows[m]`` at the input);
* ``probe.base_scores()`` — the target's output for the unperturbed images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.methods._ops import (
    index,
    minmax_per_map,
    softmax,
    to_numpy,
    upsample,
    zeros,
)
from layerscope.methods._registry import Method, register
from layerscope.methods.gradient import weighted_sum

SCORECAM_SCORES = ("probability", "channel-softmax")


def top_channels(activations: Any, top_k: int | None) -> np.ndarray:
    """Per image, the indices ``(N, k)`` of the ``top_k`` channels with the largest mean
    activation, largest first (every channel, in order, when ``top_k`` is ``None``)."""
    n, c = activations.shape[:2]
    if top_k is None or top_k >= c:
        return np.tile(np.arange(c), (n, 1))
    if top_k < 1:
        raise UsageError(f"top_k must be a positive number of channels, not {top_k}")
    means = to_numpy(activations.mean(axis=(2, 3)))
    return np.argsort(-means, axis=1, kind="stable")[:, :top_k]


def forward_passes(images: int, channels: int, top_k: int | None = None, **_: Any) -> int:
    """The extra forward passes of one layer: one per image and channel evaluated."""
    return images * (channels if top_k is None else min(channels, top_k))


def _check_perturb_batch(perturb_batch: int) -> None:
    if not isinstance(perturb_batch, (int, np.integer)) or isinstance(perturb_batch, bool) or perturb_batch < 1:
        raise UsageError(f"perturb_batch must be a positive whole number, not {perturb_batch!r}")


def _chunks(total: int, perturb_batch: int) -> list[slice]:
    return [slice(s, min(s + perturb_batch, total)) for s in range(0, total, perturb_batch)]


def _scatter(like: Any, channels: np.ndarray, values: Any) -> Any:
    """``(N, C)`` weights: ``values`` ``(N, k)`` at ``channels`` ``(N, k)``, 0 elsewhere."""
    n, k = channels.shape
    weights = zeros(like, (n, like.shape[1]))
    rows = np.repeat(np.arange(n), k)
    weights[index(like, rows), index(like, channels.reshape(-1))] = values.reshape(-1)
    return weights


def scorecam(
    activations: Any,
    gradients: Any = None,
    *,
    probe: Any,
    perturb_batch: int = 32,
    top_k: int | None = None,
    score: str = "probability",
) -> Any:
    """Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, CVPR Workshops 2020,
    "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks").

    Each channel, min-max scaled to [0, 1] and upsampled (bilinear) to the input size, masks
    the input: ``H_k = U(s(A_k))``; its weight is how much the masked input ``X ⊙ H_k`` still
    scores for the target: ``w_k = softmax(f(X ⊙ H_k))_c`` (``score="probability"``, the
    class probability, as in the authors' code) or ``w = softmax_k(f_c(X ⊙ H_k))``
    (``score="channel-softmax"``: softmax of the target's raw output across channels, as
    torchcam and pytorch-grad-cam do). ``CAM = ReLU(Σ_k w_k A_k)``. A flat channel gives
    an all-zero mask.

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ignored.
        probe: the capture's access to the model (see the module docstring).
        perturb_batch: masked inputs per forward pass.
        top_k: evaluate only the ``k`` channels of largest mean activation (others weigh 0).
        score: ``"probability"`` or ``"channel-softmax"``.
    """
    if score not in SCORECAM_SCORES:
        raise UsageError(f"unknown Score-CAM score {score!r}; expected one of {', '.join(SCORECAM_SCORES)}")
    _check_perturb_batch(perturb_batch)
    channels = top_channels(activations, top_k)
    n, k = channels.shape
    rows = np.repeat(np.arange(n), k)
    chans = channels.reshape(-1)
    masks = minmax_per_map(activations)
    x = probe.input
    size = tuple(x.shape[-2:])
    scores = zeros(activations, (n * k,))
    for sl in _chunks(n * k, perturb_batch):
        r = rows[sl]
        up = upsample(masks[index(masks, r), index(masks, chans[sl])], size)
        masked = x[index(x, r)] * up[:, None]
        scores[sl] = probe.score(masked, r, probability=score == "probability")
    values = scores.reshape(n, k)
    if score == "channel-softmax":
        values = softmax(values, axis=1)
    return weighted_sum(_scatter(activations, channels, values), activations)


def ablationcam(
    activations: Any,
    gradients: Any = None,
    *,
    probe: Any,
    perturb_batch: int = 32,
    top_k: int | None = None,
) -> Any:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization").

    Each channel's weight is the relative drop of the target's output ``y`` when that channel
    of the layer's output is set to zero (``y_k``): ``w_k = (y − y_k) / |y|``, and
    ``CAM = ReLU(Σ_k w_k A_k)``. (The paper divides by ``y``; ``|y|`` is the same for a
    positive score and keeps the map's meaning for a negative one. ``y = 0`` gives zeros.)

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ignored.
        probe: the capture's access to the model (see the module docstring).
        perturb_batch: ablated copies per forward pass.
        top_k: ablate only the ``k`` channels of largest mean activation (others weigh 0).
    """
    _check_perturb_batch(perturb_batch)
    channels = top_channels(activations, top_k)
    n, k = channels.shape
    rows = np.repeat(np.arange(n), k)
    chans = channels.reshape(-1)
    ablated = zeros(activations, (n * k,))
    for sl in _chunks(n * k, perturb_batch):
        r = rows[sl]
        out = activations[index(activations, r)]  # a copy
        out[index(out, np.arange(len(r))), index(out, chans[sl])] = 0
        ablated[sl] = probe.score_replaced(out, r)
    base = probe.base_scores()[index(activations, rows)]
    size = abs(base)
    drop = (base - ablated) / (size + (size == 0)) * (size != 0)
    return weighted_sum(_scatter(activations, channels, drop.reshape(n, k)), activations)


register(
    Method(
        name="scorecam",
        title="Score-CAM",
        fn=scorecam,
        summary="Score-CAM: each channel masks the input; weight = the masked input's score (Wang et al. 2020)",
        needs=frozenset({"activations", "perturbation"}),
        cost="1 forward + 1 forward per image, layer and channel (C, or top_k)",
        forward_passes=forward_passes,
    )
)
register(
    Method(
        name="ablationcam",
        title="Ablation-CAM",
        fn=ablationcam,
        summary="Ablation-CAM: weight = relative score drop when the channel is zeroed (Desai & Ramaswamy 2020)",
        needs=frozenset({"activations", "perturbation"}),
        cost="1 forward + 1 forward per image, layer and channel (C, or top_k)",
        forward_passes=forward_passes,
    )
)
