"""Guided backpropagation and Guided Grad-CAM (:mod:`layerscope.methods.guided`) against
captum; in-place and functional ReLUs; a model without ReLU."""

# ruff: noqa: F811 - fixtures imported from helpers_methods are test arguments
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
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
from conftest import minmax as norm

# --- guided backpropagation ---------------------------------------------------------------


def captum_quiet(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_guided_backprop_equals_captum(net: SmallVGG, x: torch.Tensor) -> None:
    from captum.attr import GuidedBackprop

    ref = captum_quiet(GuidedBackprop(net).attribute, x.clone().requires_grad_(), target=TARGETS)
    ref = ref.abs().amax(dim=1).detach().numpy()
    exp = layerscope.explain(net, x, method="guided-backprop", target=TARGETS)
    for name in exp.layers:
        assert exp.cams[name].shape == (2, 48, 48)
        assert_same(exp.cams[name], ref, name)
    plain = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(net(plain)[range(2), TARGETS].sum(), plain)
    assert np.abs(norm(g.abs().amax(1).numpy()) - norm(ref)).max() > 1e-2  # really guided


def test_guided_gradcam_equals_captum_at_every_layer(net: SmallVGG, x: torch.Tensor) -> None:
    from captum.attr import GuidedGradCam

    exp = layerscope.explain(net, x, method="guided-gradcam", target=TARGETS)
    modules = dict(net.named_modules())
    for name in exp.layers:
        attr = captum_quiet(
            GuidedGradCam(net, modules[paths(net)[name]]).attribute,
            x.clone().requires_grad_(),
            target=TARGETS,
            interpolate_mode="bilinear",
        )
        assert_same(exp.cams[name], attr.abs().amax(dim=1).detach().numpy(), name)


def test_guided_handles_inplace_and_functional_relu(net: SmallVGG, xs: torch.Tensor) -> None:
    layers = ["block1_conv1", "block3_conv2", "block5_conv3"]
    ref = layerscope.explain(net, xs, layers, method="guided-gradcam", target=TARGETS)
    for variant in (SmallVGG(inplace=True), SmallVGG(functional=True), SmallVGG(inplace=True, functional=True)):
        variant.load_state_dict(net.state_dict())
        variant.eval()
        exp = layerscope.explain(variant, xs, layers, method="guided-gradcam", target=TARGETS)
        for name in exp.layers:
            np.testing.assert_allclose(exp.cams[name], ref.cams[name], rtol=1e-5, atol=1e-9)


def test_guided_without_relu_warns() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="no ReLU"):
        layerscope.explain(model.eval(), torch.randn(1, 3, 8, 8), layers="0", method="guided-backprop")
