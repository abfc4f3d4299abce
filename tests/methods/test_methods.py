"""The CAM family: every method checked against an independent implementation (torchcam,
captum) or a hand-computed answer, on small random-weight nets and tiny hand-weighted ones.

Maps are compared after the same min-max normalisation, to 1e-4.
"""

# ruff: noqa: F811 - fixtures imported from helpers_methods are test arguments
from __future__ import annotations

import copy

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
    _CountBackward,
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
from layerscope.errors import UsageError
from layerscope.info import attach_info, model_info
from layerscope.methods import get_method, list_methods
from layerscope.models import vgg

# --- the registry ------------------------------------------------------------------------


def test_registry_has_the_family_with_kinds_costs_and_papers() -> None:
    assert list_methods() == [*ALL, "rollout", "gradrollout", "legrad"]  # the attention ones: test_attention.py
    kinds = {n: get_method(n).kind for n in ALL}
    assert {n for n, k in kinds.items() if k == "gradient"} == {*GRADIENT, "finercam", "shapleycam"}
    assert kinds["eigencam"] == "activation" and not get_method("eigencam").needs_gradients
    assert kinds["scorecam"] == kinds["ablationcam"] == "perturbation"
    assert kinds["guided-backprop"] == kinds["guided-gradcam"] == "pixel"
    for name in ALL:
        m = get_method(name)
        assert m.summary and m.cost and m.title
        assert name == "gradcam-elementwise" or any(str(y) in (m.fn.__doc__ or "") for y in range(2014, 2026)), name
    for name in ("scorecam", "ablationcam"):
        m = get_method(name)
        assert {"perturb_batch", "top_k"} <= set(m.options)
        assert m.forward_passes(2, 64, top_k=16) == 32 and m.forward_passes(2, 8) == 16
    assert get_method("gradcam").frameworks == ("torch", "keras")
    assert get_method("scorecam").frameworks == ("torch",)


# --- gradient methods against torchcam and captum -----------------------------------------


@pytest.mark.parametrize(
    ("method", "peer"), [("gradcam", "GradCAM"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")]
)
def test_equals_torchcam_at_every_layer(net: SmallVGG, x: torch.Tensor, method: str, peer: str) -> None:
    import torchcam.methods as tc

    exp = layerscope.explain(net, x, method=method, target=TARGETS)
    assert len(exp.layers) == 13
    for name in exp.layers:
        with getattr(tc, peer)(net, paths(net)[name]) as extractor:
            scores = net(x)
            ref = extractor(TARGETS, scores, normalized=False)[0]
        assert_same(exp.cams[name], ref.detach().numpy(), f"{method} at {name}")


def test_gradcam_equals_captum_layergradcam(net: SmallVGG, x: torch.Tensor) -> None:
    from captum.attr import LayerGradCam

    exp = layerscope.explain(net, x, method="gradcam", target=TARGETS)
    modules = dict(net.named_modules())
    for name in exp.layers:
        ref = LayerGradCam(net, modules[paths(net)[name]]).attribute(x, target=TARGETS, relu_attributions=True)
        assert_same(exp.cams[name], ref[:, 0].detach().numpy(), name)


def test_gradcam_plusplus_follows_the_paper_at_every_layer(net: SmallVGG, x: torch.Tensor) -> None:
    exp = layerscope.explain(net, x, method="gradcam++", target=TARGETS)
    for name in exp.layers:
        a, g = layer_ag(net, x, paths(net)[name], TARGETS)
        s = a.sum(axis=(2, 3), keepdims=True)
        den = 2 * g**2 + s * g**3
        alpha = np.where((g != 0) & (den != 0), g**2 / np.where(den != 0, den, 1), 0.0)  # eq. 19
        w = (alpha * np.maximum(g, 0)).sum(axis=(2, 3))
        ref = np.maximum(np.einsum("nc,nchw->nhw", w, a), 0)
        assert_same(exp.cams[name], ref, name)


def test_gradcam_plusplus_hand_computed() -> None:
    # conv 1×1 (1→2, weights 1, 2; biases 0, −1) → ReLU → mean → linear (1, 3; bias 0.5).
    # x = [[1, −2], [3, 0]]: A0 = [[1, 0], [3, 0]], A1 = [[1, 0], [5, 0]]; g = (1/4, 3/4)
    # everywhere; ΣA = (4, 6); α_k = 1/(2 + ΣA_k·g_k) = (1/3, 2/13); w_k = Σ α g = (1/3, 6/13).
    exp = layerscope.explain(tiny_relu_net(), X_TINY, layers="relu", method="gradcam++", target=0)
    np.testing.assert_allclose(exp.cams["relu"][0], [[31 / 39, 0.0], [43 / 13, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("as_torch", [False, True])
def test_gradcam_plusplus_zero_denominator_follows_eq19(as_torch: bool) -> None:
    """Where 2 + ΣA·g = 0 (negative activations), eq. 19's α is 0, not inf: the short form
    1/(2 + S·g) must fall back to the paper's quotient there (and agree with it elsewhere)."""
    from layerscope.methods.gradient import gradcam_plusplus

    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    g = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    a[0, 1] = -0.25  # S = −4 for channel 1 of image 0 …
    g[0, 1, 0, 0] = 0.5  # … so 2 + S·g = 0 at one cell where g > 0
    s = a.sum(axis=(2, 3), keepdims=True, dtype=np.float64)
    g64 = g.astype(np.float64)
    den = 2 * g64**2 + s * g64**3
    alpha = np.where((g64 != 0) & (den != 0), g64**2 / np.where(den != 0, den, 1), 0.0)
    w = (alpha * np.maximum(g64, 0)).sum(axis=(2, 3))
    ref = np.maximum(np.einsum("nc,nchw->nhw", w, a), 0)
    got = gradcam_plusplus(torch.from_numpy(a), torch.from_numpy(g)) if as_torch else gradcam_plusplus(a, g)
    got = np.asarray(got)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_torchcam_gradcampp_deviates_from_the_paper(net: SmallVGG, x: torch.Tensor) -> None:
    """torchcam 0.5's GradCAMpp divides α in place on a boolean-mask *copy*
    (``alpha[idx][mask].div_(...)``), so α stays g²: its weights are Σ g²·ReLU(g). The
    paper's α (checked above) differs; this pins the peer's behaviour down exactly."""
    import torchcam.methods as tc

    path = paths(net)["block4_conv3"]
    with tc.GradCAMpp(net, path) as extractor:
        ref = extractor(TARGETS, net(x), normalized=False)[0].detach().numpy()
    a, g = layer_ag(net, x, path, TARGETS)
    buggy = np.maximum(np.einsum("nc,nchw->nhw", (g**2 * np.maximum(g, 0)).sum(axis=(2, 3)), a), 0)
    assert_same(ref, buggy, "torchcam GradCAMpp = Σ g²·ReLU(g) weights")
    ours = layerscope.explain(net, x, layers="block4_conv3", method="gradcam++", target=TARGETS).cams["block4_conv3"]
    assert np.abs(norm(ours) - norm(ref)).max() > 1e-2


@pytest.mark.parametrize("method", ["hirescam", "gradcam-elementwise", "layercam"])
def test_elementwise_methods_follow_their_formula_at_every_layer(net: SmallVGG, x: torch.Tensor, method: str) -> None:
    exp = layerscope.explain(net, x, method=method, target=TARGETS)
    for name in exp.layers:
        a, g = layer_ag(net, x, paths(net)[name], TARGETS)
        ref = {
            "hirescam": np.maximum((g * a).sum(axis=1), 0),
            "gradcam-elementwise": np.maximum(g * a, 0).sum(axis=1),
            "layercam": np.maximum((np.maximum(g, 0) * a).sum(axis=1), 0),
        }[method]
        assert_same(exp.cams[name], ref, name)


def test_elementwise_methods_hand_computed() -> None:
    # conv 1×1 (1→2, weights 1, −1) → flatten → linear: G0 = W0, G1 = W1 exactly, A0 = x, A1 = −x.
    # W0 = [[1, 2], [−1, 0.5]], W1 = [[0.5, 1], [−2, 3]], x = [[1, −2], [3, 0]]:
    # W0·A0 = [[1, −4], [−3, 0]], W1·A1 = [[−0.5, 2], [6, 0]].
    model = tiny_flatten_net()
    cams = {m: layerscope.explain(model, X_TINY, layers="conv", method=m, target=0).cams["conv"][0] for m in GRADIENT}
    np.testing.assert_allclose(cams["hirescam"], [[0.5, 0.0], [3.0, 0.0]], atol=1e-6)  # ReLU(sum)
    np.testing.assert_allclose(cams["gradcam-elementwise"], [[1.0, 2.0], [6.0, 0.0]], atol=1e-6)  # sum of ReLUs
    np.testing.assert_allclose(cams["layercam"], [[0.5, 0.0], [0.0, 0.0]], atol=1e-6)  # ReLU(W)·A
    np.testing.assert_allclose(cams["gradcam"], np.zeros((2, 2)), atol=1e-6)  # mean(W0) = mean(W1) = 0.625


def test_hirescam_equals_gradcam_for_a_gap_linear_head(x: torch.Tensor) -> None:
    # Draelos & Carin: when global average pooling and one linear layer follow the layer,
    # every gradient is constant over positions and the two methods coincide.
    torch.manual_seed(3)
    convs = [nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU()]
    model = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    hires = layerscope.explain(model, x, layers="3", method="hirescam", target=TARGETS).cams["3"]
    grad = layerscope.explain(model, x, layers="3", method="gradcam", target=TARGETS).cams["3"]
    assert hires.max() > 0
    np.testing.assert_allclose(hires, grad, rtol=1e-4, atol=1e-6 * float(grad.max()))


# --- Eigen-CAM and Eigen-Grad-CAM ----------------------------------------------------------


def numpy_pca_map(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """First principal component by numpy's SVD; sign: positive correlation with reference."""
    out = []
    for v, r in zip(values, reference, strict=True):
        c, h, w = v.shape
        m = v.reshape(c, h * w).T
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        p = m @ vt[0]
        if np.corrcoef(p, r.reshape(-1))[0, 1] < 0:
            p = -p
        out.append(np.maximum(p, 0).reshape(h, w))
    return np.stack(out)


@pytest.mark.parametrize("method", ["eigencam", "eigengradcam"])
def test_eigen_methods_equal_numpy_svd_at_every_layer(net: SmallVGG, x: torch.Tensor, method: str) -> None:
    exp = layerscope.explain(net, x, method=method, target=TARGETS)
    for name in exp.layers:
        a, g = layer_ag(net, x, paths(net)[name], TARGETS)
        values = a if method == "eigencam" else g * a
        ref = numpy_pca_map(values, values.mean(axis=1) if method == "eigencam" else values.sum(axis=1))
        assert_same(exp.cams[name], ref, name)


def test_eigencam_hand_computed_and_sign_rule() -> None:
    # Rank one: A_k = u_k·P. The first principal component is ±(P − mean P)·|u|; its sign
    # follows the mean activation, mean(u)·P.
    fn = get_method("eigencam").fn
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    for u, expected in (((3.0, 4.0), [[0.0, 0.0], [2.5, 7.5]]), ((-3.0, -4.0), [[7.5, 2.5], [0.0, 0.0]])):
        a = np.stack([k * p for k in u])[None]
        np.testing.assert_allclose(fn(a, None)[0], expected, atol=1e-9)
        np.testing.assert_allclose(fn(torch.from_numpy(a), None)[0].numpy(), expected, atol=1e-9)
    # Eigen-Grad-CAM with unit gradients is Eigen-CAM of the activations.
    a = np.stack([3.0 * p, 4.0 * p])[None]
    np.testing.assert_allclose(get_method("eigengradcam").fn(a, np.ones_like(a))[0], [[0, 0], [2.5, 7.5]], atol=1e-9)


def test_eigencam_needs_no_backward_and_ignores_the_target(net: SmallVGG, x: torch.Tensor) -> None:
    a = layerscope.explain(net, x, method="eigencam", target=3)
    b = layerscope.explain(net, x, method="eigencam", target=7)
    for name in a.layers:
        np.testing.assert_array_equal(a.cams[name], b.cams[name])


# --- passes, model left alone, frameworks ---------------------------------------------------


@pytest.mark.parametrize("method", [*GRADIENT, "eigencam"])
def test_one_pass_methods_do_one_forward_and_one_backward_for_13_layers(
    net: SmallVGG, x: torch.Tensor, method: str
) -> None:
    counted = CountPasses(net)
    _CountBackward.calls = 0
    exp = layerscope.explain(counted, x, method=method, target=TARGETS)
    assert len(exp.layers) == 13
    assert counted.forwards == 1
    assert _CountBackward.calls == (0 if method == "eigencam" else 1)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "guided-backprop", "guided-gradcam"])
def test_multi_pass_methods_leave_the_model_unchanged(net: SmallVGG, x: torch.Tensor, method: str) -> None:
    model = attach_info(copy.deepcopy(net).train(), model_info(net))
    model.head[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"top_k": 2} if get_method(method).kind == "perturbation" else {}
    with torch.no_grad():  # an outer no_grad must not break the guided or the layer gradients
        exp = layerscope.explain(model, x, layers=["block2_conv2", "block5_conv1"], method=method, **options)
    assert all(exp.cams[name].max() > 0 for name in exp.layers)
    assert model.training and all(m.training for m in model.modules())
    assert not model.head[0].weight.requires_grad and model.head[2].weight.requires_grad
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert all(p.grad is None for p in m.parameters(recurse=False))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not torch._C._is_torch_function_mode_enabled()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "guided-backprop", "guided-gradcam"])
def test_torch_only_methods_refuse_keras_models_clearly(method: str) -> None:
    with pytest.raises(UsageError, match=r"not available for Keras models: .*available for Keras: gradcam"):
        layerscope.explain(object(), np.zeros((1, 3, 8, 8), np.float32), method=method, framework="keras")


@pytest.mark.parametrize("method", [*GRADIENT, "eigencam"])
def test_numpy_and_torch_arrays_give_the_same_map(net: SmallVGG, x: torch.Tensor, method: str) -> None:
    a, g = layer_ag(net, x, paths(net)["block4_conv2"], TARGETS)
    a32, g32 = a.astype(np.float32), g.astype(np.float32)
    fn = get_method(method).fn
    from_numpy = fn(a32, None if method == "eigencam" else g32)
    from_torch = fn(torch.from_numpy(a32), None if method == "eigencam" else torch.from_numpy(g32)).numpy()
    assert isinstance(from_numpy, np.ndarray) and from_numpy.shape == (2, 6, 6)
    np.testing.assert_allclose(from_numpy, from_torch, rtol=1e-4, atol=1e-6 * float(np.abs(from_torch).max()))


def test_numpy_upsample_equals_torch() -> None:
    from layerscope.methods._ops import upsample

    m = np.random.default_rng(0).random((2, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(upsample(m, (7, 12)), upsample(torch.from_numpy(m), (7, 12)).numpy(), atol=1e-6)


def test_every_method_at_every_layer_of_a_vgg16_layout(net: SmallVGG, xs: torch.Tensor) -> None:
    model = SmallVGG(inplace=True)  # VGG16's modules, friendly names and in-place ReLUs
    model.load_state_dict(net.state_dict())
    x = xs[:1]
    for method in ALL:
        options = {"top_k": 2, "perturb_batch": 16} if get_method(method).kind == "perturbation" else {}
        exp = layerscope.explain(model.eval(), x, method=method, **options)
        assert exp.layers == list(vgg.make_features()[1]), method
        assert len(exp.layers) == 13, method
        for name in exp.layers:
            cam = exp.cams[name]
            size = (32, 32) if get_method(method).kind == "pixel" else exp.shapes[name][1:]
            assert cam.shape == (1, *size) and cam.dtype == np.float32, (method, name)
            assert np.isfinite(cam).all() and (cam >= 0).all(), (method, name)


# --- one source for options; Eigen methods on non-finite activations -------------------------


def test_options_are_read_from_the_signature() -> None:
    import dataclasses

    from layerscope.methods import Method

    assert get_method("gradcam").options == {"guided_grads": False}
    assert get_method("xgradcam").options == {"eps": 1e-8}
    assert get_method("eigencam").options == get_method("eigengradcam").options == {"center": True}
    assert get_method("scorecam").options == {"perturb_batch": 32, "top_k": None, "score": "probability"}
    assert get_method("ablationcam").options == {"perturb_batch": 32, "top_k": None}
    assert get_method("guided-gradcam").options == get_method("layercam").options == {}

    def mine(activations, gradients, *, probe=None, scale: float = 2.0):  # type: ignore[no-untyped-def]
        return activations.sum(axis=1) * scale

    assert Method(name="mine", title="Mine", fn=mine, summary="").options == {"scale": 2.0}
    fields = {f.name for f in dataclasses.fields(Method)}
    assert "options" not in fields and "extra_forwards" not in fields


class _NaNAt(nn.Module):
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        if len(t) == 2:
            t[0, :, 1, 1] = float("inf")  # image 0 of a pair only
        return t


@pytest.mark.parametrize("method", ["eigencam", "eigengradcam"])
def test_eigen_methods_zero_and_warn_on_nonfinite_activations(method: str) -> None:
    # Issue 9 #5: eigh failed to converge (LinAlgError) on NaN/inf activations.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), _NaNAt(), nn.Hardtanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="NaN or inf in the maps of 1"):
        exp = layerscope.explain(model, x, layers="1", method=method, target=0)
    assert (exp.cams["1"][0] == 0).all()  # the image with inf: zeros
    alone = layerscope.explain(model, x[1:], layers="1", method=method, target=0)  # image 1 alone: finite
    assert exp.cams["1"][1].max() > 0
    np.testing.assert_allclose(exp.cams["1"][1], alone.cams["1"][0], rtol=1e-5, atol=1e-7)


def test_eigencam_is_scale_invariant_for_huge_finite_values() -> None:
    from layerscope.methods.activation import eigencam

    a = np.random.default_rng(0).normal(size=(1, 5, 4, 4))
    ref = eigencam(a)
    big = eigencam(a * 1e200)  # the Gram matrix would overflow float64 without scaling
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big / 1e200, ref, rtol=1e-8, atol=1e-12)
