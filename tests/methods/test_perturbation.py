"""Score-CAM and Ablation-CAM (:mod:`layerscope.methods.perturbation`) against torchcam, an
independent loop and hand-computed answers; their cost announced and counted."""

# ruff: noqa: F811 - fixtures imported from helpers_methods are test arguments
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_methods import (  # noqa: F401 - fixtures and helpers
    ALL,
    GRADIENT,
    TARGETS,
    TOL,
    WIDTHS,
    X_TINY,
    CountPasses,
    SmallVGG,
    assert_same,
    layer_ag,
    net,
    one_thread,
    paths,
    tiny_flatten_net,
    tiny_relu_net,
    x,
    xs,
)
from torch import nn

import layerscope
from layerscope.errors import UsageError
from layerscope.info import ModelInfo, attach_info

# --- perturbation methods -----------------------------------------------------------------


def test_scorecam_channel_softmax_equals_torchcam_at_every_layer(net: SmallVGG, x: torch.Tensor) -> None:
    import torchcam.methods as tc

    exp = layerscope.explain(net, x, method="scorecam", target=TARGETS, score="channel-softmax", perturb_batch=64)
    assert len(exp.layers) == 13
    for name in exp.layers:
        with tc.ScoreCAM(net, paths(net)[name], batch_size=64) as extractor:
            with torch.no_grad():
                net(x)
            ref = extractor(TARGETS, normalized=False)[0]
        assert_same(exp.cams[name], ref.numpy(), name)


def independent_scorecam(model: nn.Module, x: torch.Tensor, path: str, targets: list[int]) -> np.ndarray:
    """Score-CAM as in the authors' code, one channel at a time: weight = class probability."""
    a, _ = layer_ag(model, x, path, targets)
    out = np.zeros(a.shape[:1] + a.shape[2:])
    with torch.no_grad():
        for i, t in enumerate(targets):
            for k in range(a.shape[1]):
                ak = a[i, k]
                rng = ak.max() - ak.min()
                mask = (ak - ak.min()) / rng if rng > 0 else np.zeros_like(ak)
                mask = torch.tensor(mask, dtype=torch.float32)[None, None]
                up = F.interpolate(mask, size=x.shape[-2:], mode="bilinear")
                p = torch.softmax(model(x[i : i + 1] * up), dim=1)[0, t].item()
                out[i] += p * ak
    return np.maximum(out, 0)


def test_scorecam_probability_equals_an_independent_loop(net: SmallVGG, xs: torch.Tensor) -> None:
    layers = ["block2_conv2", "block5_conv3"]
    exp = layerscope.explain(net, xs, layers=layers, method="scorecam", target=TARGETS, perturb_batch=7)
    for name in layers:
        assert_same(exp.cams[name], independent_scorecam(net, xs, paths(net)[name], TARGETS), name)


def independent_ablation(model: nn.Module, x: torch.Tensor, path: str, targets: list[int], k: int | None = None):  # type: ignore[no-untyped-def]
    """Ablation-CAM one channel at a time, zeroing it with a hook written here."""
    module = dict(model.named_modules())[path]
    a, _ = layer_ag(model, x, path, targets)
    out = np.zeros(a.shape[:1] + a.shape[2:])
    with torch.no_grad():
        y = model(x)[range(len(targets)), targets].numpy()
        for i, t in enumerate(targets):
            order = np.argsort(-a[i].mean(axis=(1, 2)), kind="stable")[:k] if k else range(a.shape[1])
            for c in order:

                def zero(m, inp, o, c=c):  # type: ignore[no-untyped-def]
                    o = o.clone()
                    o[:, c] = 0
                    return o

                h = module.register_forward_hook(zero)
                try:
                    yk = model(x[i : i + 1])[0, t].item()
                finally:
                    h.remove()
                out[i] += (y[i] - yk) / abs(y[i]) * a[i, c]
    return np.maximum(out, 0)


def test_ablationcam_equals_an_independent_loop(net: SmallVGG, xs: torch.Tensor) -> None:
    layers = ["block2_conv1", "block5_conv3"]
    exp = layerscope.explain(net, xs, layers=layers, method="ablationcam", target=TARGETS, perturb_batch=5)
    for name in layers:
        assert_same(exp.cams[name], independent_ablation(net, xs, paths(net)[name], TARGETS), name)
    top = layerscope.explain(net, xs, layers="block5_conv3", method="ablationcam", target=TARGETS, top_k=4)
    ref = independent_ablation(net, xs, paths(net)["block5_conv3"], TARGETS, k=4)
    assert_same(top.cams["block5_conv3"], ref, "top_k=4")


def test_ablationcam_hand_computed() -> None:
    # y = 0.5 + 1·mean(A0) + 3·mean(A1) = 0.5 + 1 + 4.5 = 6. Zeroing A0 gives 5, A1 gives 1.5:
    # w = ((6 − 5)/6, (6 − 1.5)/6) = (1/6, 3/4); CAM = ReLU(A0/6 + 3·A1/4).
    exp = layerscope.explain(tiny_relu_net(), X_TINY, layers="relu", method="ablationcam", target=0)
    np.testing.assert_allclose(exp.cams["relu"][0], [[11 / 12, 0.0], [4.25, 0.0]], rtol=1e-6)


def test_perturbation_cost_is_announced_counted_and_batching_invariant(
    net: SmallVGG, x: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    counted = CountPasses(net)
    layers = ["block1_conv1", "block5_conv3"]
    with caplog.at_level(logging.INFO, logger="layerscope"):
        exp = layerscope.explain(counted, x, layers=layers, method="scorecam", target=TARGETS, top_k=3, perturb_batch=4)
    assert "scorecam: 12 forward passes (2 layers, 2 images)" in caplog.text
    assert counted.forwards == 1 + 2 * 2  # the capture pass, then ceil(2·3 / 4) batches per layer
    assert counted.images == 2 + 2 * 2 * 3  # each masked copy went through the model once
    again = layerscope.explain(net, x, layers=layers, method="scorecam", target=TARGETS, top_k=3, perturb_batch=1)
    for name in layers:
        np.testing.assert_allclose(exp.cams[name], again.cams[name], rtol=1e-5, atol=1e-7)
    for bad in ({"perturb_batch": 0}, {"top_k": 0}, {"score": "logits"}):
        with pytest.raises(UsageError):
            layerscope.explain(net, x, layers="block1_conv1", method="scorecam", target=TARGETS, **bad)


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        names = {k: f"model.{v}" for k, v in paths(model).items()}
        attach_info(self, ModelInfo(layers=names, output="probabilities"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def test_scorecam_probability_of_a_model_that_outputs_probabilities(net: SmallVGG, xs: torch.Tensor) -> None:
    # The class probability is the model's own output then, never a softmax of a softmax.
    layers = ["block4_conv1", "block5_conv3"]
    ref = layerscope.explain(net, xs, layers, method="scorecam", target=TARGETS)
    exp = layerscope.explain(Softmaxed(net), xs, layers, method="scorecam", target=TARGETS)
    for name in layers:
        np.testing.assert_allclose(exp.cams[name], ref.cams[name], rtol=1e-4, atol=1e-7)
