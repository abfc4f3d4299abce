"""Several one-pass methods from one capture (issue 20, "several methods, one pass"):
``explain_many`` and ``grid`` hand each layer's activation and gradient to every
gradient-family and activation method at once, so M methods × L layers cost one forward and
one backward pass, and each method's maps equal its own ``explain``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from layerscope.methods import get_method, one_pass

ONE_PASS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]
VGG_LAYERS = [f"features.{i}" for i in (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)]


def counted(monkeypatch: pytest.MonkeyPatch, model: nn.Module) -> tuple[list[int], list[int]]:
    """``(backward calls, forward calls)``, counted while the test runs."""
    backward: list[int] = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backward.append(1) or real(*a, **k))
    forward: list[int] = []
    model.register_forward_pre_hook(lambda m, i: forward.append(1))
    return backward, forward


def test_six_one_pass_methods_at_13_layers_cost_one_forward_and_one_backward(
    vgg16: nn.Module, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = {m: layerscope.explain(vgg16, photo, VGG_LAYERS, m, 3) for m in ONE_PASS}
    backward, forward = counted(monkeypatch, vgg16)
    exps = layerscope.explain_many(vgg16, photo, ONE_PASS, [3], layers=VGG_LAYERS)
    assert backward == [1] and forward == [1]
    assert [e.method for e in exps] == ONE_PASS and all(int(e.targets[0]) == 3 for e in exps)
    for e in exps:
        ref = alone[e.method]
        assert e.layers == ref.layers
        for layer in e.layers:
            np.testing.assert_allclose(e.cams[layer], ref.cams[layer], rtol=1e-5, atol=1e-6 * ref.cams[layer].max())
            assert (e.flat[layer] == ref.flat[layer]).all()


def test_classes_and_a_perturbation_method_keep_their_order_and_passes(
    vgg16: nn.Module, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    backward, _ = counted(monkeypatch, vgg16)
    layers = ["features.27", "features.29"]
    exps = layerscope.explain_many(vgg16, photo, ["gradcam", "ablationcam", "layercam"], [3, 7], layers=layers, top_k=4)
    assert [(e.method, int(e.targets[0])) for e in exps] == [
        ("gradcam", 3),
        ("gradcam", 7),
        ("ablationcam", 3),
        ("ablationcam", 7),
        ("layercam", 3),
        ("layercam", 7),
    ]
    assert len(backward) == 1  # Grad-CAM and Layer-CAM, both classes, one backward; Ablation-CAM has none
    for e in exps:
        opts = {"top_k": 4} if e.method == "ablationcam" else {}
        ref = layerscope.explain(vgg16, photo, layers, e.method, int(e.targets[0]), **opts)
        for layer in layers:  # a batch of two classes sums in another order than one image: 1e-4 of the range
            np.testing.assert_allclose(e.cams[layer], ref.cams[layer], rtol=1e-4, atol=1e-4 * ref.cams[layer].max())


def test_method_options_reach_the_joined_methods(vgg16: nn.Module, photo: np.ndarray) -> None:
    exps = layerscope.explain_many(vgg16, photo, ["gradcam", "xgradcam"], layers="features.29", guided_grads=True)
    ref = layerscope.explain(vgg16, photo, "features.29", "gradcam", int(exps[0].targets[0]), guided_grads=True)
    np.testing.assert_allclose(exps[0].cams["features.29"], ref.cams["features.29"], rtol=1e-5)
    assert exps[0].options == {"guided_grads": True} and exps[1].options == {}


def test_one_pass_refuses_methods_that_need_more() -> None:
    with pytest.raises(ValueError, match="one-pass methods"):
        one_pass([(get_method("gradcam"), {}), (get_method("scorecam"), {})])
    joined = one_pass([(get_method("gradcam"), {}), (get_method("eigencam"), {})])
    assert joined.name == "gradcam+eigencam" and joined.needs == {"activations", "gradients"}


def test_several_detections_and_one_pass_methods_share_one_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerscope.models import demo_detector
    from layerscope.targets import detections

    model = layerscope.load_model("demo-detector")
    image, _ = demo_detector.sample_image()
    alone = layerscope.explain_many(model, image, ["layercam"], targets=detections(3))
    backward, _ = counted(monkeypatch, model)
    exps = layerscope.explain_many(model, image, ["gradcam", "layercam"], targets=detections(3))
    assert backward == [1] and [e.method for e in exps] == ["gradcam"] * 3 + ["layercam"] * 3
    for got, ref in zip(exps[3:], alone, strict=True):
        assert got.detections[0]["explained"]["box"] == ref.detections[0]["explained"]["box"]
        for layer in ref.layers:
            np.testing.assert_allclose(got.cams[layer], ref.cams[layer], rtol=1e-5, atol=1e-6 * ref.cams[layer].max())
