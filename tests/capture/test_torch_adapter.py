"""The torch capture adapter (:mod:`layerscope.capture.torch`): correctness of the one pass
and of Grad-CAM, the model left alone, clear errors, one transfer to the host."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_capture import X_TINY, vgg_info
from torch import nn

import layerscope
from conftest import TinyNet, not_inplace
from layerscope.errors import ModelError, UsageError
from layerscope.info import attach_info


@pytest.fixture
def vgg16(vgg16_random: nn.Module) -> nn.Module:
    """A fresh copy per test, with VGG16's friendly names in its recorded ModelInfo."""
    model = copy.deepcopy(vgg16_random)
    return attach_info(model, vgg_info(model))


def test_gradcam_hand_computed(tiny: TinyNet) -> None:
    # dy0/dA0 = 2/4, dy0/dA1 = 1/4 everywhere → w = (0.5, 0.25);
    # CAM = ReLU(0.5·x − 0.25·x) = ReLU(x/4).
    exp = layerscope.explain(tiny, X_TINY, layers="conv", target=0)
    np.testing.assert_allclose(exp.cams["conv"][0], [[0.25, 0.0], [0.75, 0.0]], atol=1e-7)
    assert exp.cams["conv"].dtype == np.float32
    assert exp.shapes["conv"] == (2, 2, 2)


def test_guided_gradients_hand_computed(tiny: TinyNet) -> None:
    # Keep G only where G > 0 and A > 0. A0 = x > 0 at 2 pixels → w0 = 2·(2/4)/4 = 1/4;
    # A1 = −x > 0 at 1 pixel → w1 = (1/4)/4 = 1/16. CAM = ReLU(x/4 − x/16) = ReLU(3x/16).
    exp = layerscope.explain(tiny, X_TINY, layers="conv", target=0, guided_grads=True)
    np.testing.assert_allclose(exp.cams["conv"][0], [[3 / 16, 0.0], [9 / 16, 0.0]], atol=1e-7)


def test_cam_starts_from_zero_and_flat_map_is_flagged(tiny: TinyNet) -> None:
    # Class 1 has zero weights: every gradient is 0, so the map is all zeros (the recipe's
    # cam = ones would give a constant 1), finite, and flagged flat.
    exp = layerscope.explain(tiny, X_TINY, layers="conv", target=1)
    assert np.array_equal(exp.cams["conv"][0], np.zeros((2, 2), np.float32))
    assert bool(exp.flat["conv"][0])
    frames = exp.frames()
    assert np.isfinite(np.asarray(frames[0], dtype=np.float32)).all()


def upsample(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize("guided", [False])
def test_equals_captum_on_every_vgg16_layer(vgg16: nn.Module, guided: bool) -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    exp = layerscope.explain(vgg16, x)
    assert exp.layers == [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    ref_model = not_inplace(vgg16)  # captum needs no in-place op after the hooked module
    target = int(exp.targets[0])
    for name in exp.layers:
        module = ref_model.get_submodule(vgg_info(vgg16).layers[name])
        ref = LayerGradCam(ref_model, module).attribute(x, target=target, relu_attributions=True)
        ref_up = LayerAttribution.interpolate(ref, (64, 64), "bilinear")[:, 0].detach().numpy()
        ours_up = upsample(torch.from_numpy(exp.cams[name]), (64, 64))
        scale = max(float(np.abs(ref_up).max()), 1e-30)
        assert float(ref_up.max()) > 0, f"{name}: degenerate reference"
        assert np.abs(ours_up - ref_up).max() / scale <= 1e-5, name
        np.testing.assert_allclose(exp.cams[name][0], ref[0, 0].detach().numpy(), rtol=1e-4, atol=1e-6 * scale)


def test_inplace_and_not_inplace_relu_give_same_maps(vgg16: nn.Module) -> None:
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    names = ["features.0", "features.12", "block3_conv3", "features.28", "block5_conv3"]
    a = layerscope.explain(vgg16, x, layers=names)
    b = layerscope.explain(not_inplace(vgg16), x, layers=names, info=vgg_info(vgg16))
    for n in names:
        np.testing.assert_allclose(a.cams[n], b.cams[n], rtol=1e-5, atol=1e-9)


def test_module_name_is_before_relu_friendly_name_after(vgg16: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    exp = layerscope.explain(vgg16, x, layers=["features.28", "block5_conv3"], target=7)
    # Hand check from hooks on a non-in-place copy: A and dy/dA of each tensor.
    ref = not_inplace(vgg16)
    conv, relu = ref.features[28], ref.features[29]
    kept: dict[str, torch.Tensor] = {}
    h1 = conv.register_forward_hook(lambda m, i, o: kept.__setitem__("conv", o))
    h2 = relu.register_forward_hook(lambda m, i, o: kept.__setitem__("relu", o))
    out = ref(x)
    h1.remove()
    h2.remove()
    g_conv, g_relu = torch.autograd.grad(out[0, 7], [kept["conv"], kept["relu"]])
    for key, g, name in (("conv", g_conv, "features.28"), ("relu", g_relu, "block5_conv3")):
        a = kept[key].detach()
        cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
        np.testing.assert_allclose(exp.cams[name], cam.numpy(), rtol=1e-5, atol=1e-9)


def _grad_counter(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"grad": 0, "backward": 0}
    real_grad, real_backward = torch.autograd.grad, torch.autograd.backward

    def grad(*a, **k):  # type: ignore[no-untyped-def]
        calls["grad"] += 1
        return real_grad(*a, **k)

    def backward(*a, **k):  # type: ignore[no-untyped-def]
        calls["backward"] += 1
        return real_backward(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    monkeypatch.setattr(torch.autograd, "backward", backward)
    return calls


def test_one_backward_for_thirteen_layers(vgg16: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _grad_counter(monkeypatch)
    forwards = []
    handle = vgg16.register_forward_pre_hook(lambda m, i: forwards.append(1))
    try:
        exp = layerscope.explain(vgg16, torch.randn(1, 3, 32, 32))
    finally:
        handle.remove()
    assert len(exp.layers) == 13
    assert calls == {"grad": 1, "backward": 0}
    assert len(forwards) == 1


class CountBackward(torch.autograd.Function):
    """Identity whose backward counts its calls."""

    calls = 0

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        CountBackward.calls += 1
        return g


class Probe(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return CountBackward.apply(x)


def test_backward_stops_at_earliest_chosen_layer(vgg16: nn.Module) -> None:
    model = copy.deepcopy(vgg16)
    model.features.insert(16, Probe())  # between block2 and block3 (after the 2nd max-pool)
    x = torch.randn(1, 3, 32, 32)
    CountBackward.calls = 0
    layerscope.explain(model, x, layers=["features.30"])  # block5_conv1's ReLU after the insert
    assert CountBackward.calls == 0
    layerscope.explain(model, x, layers=["features.30", "features.1"])
    assert CountBackward.calls == 1


def _state(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        [getattr(m, "inplace", None) for m in model.modules()],
    )


def test_model_left_exactly_as_it_was(vgg16: nn.Module) -> None:
    model = copy.deepcopy(vgg16)
    model.train()
    model.features[3].eval()  # a mixed mode must come back mixed
    for p in model.classifier.parameters():
        p.requires_grad_(False)
    before = _state(model)
    layerscope.explain(model, torch.randn(1, 3, 32, 32))
    after = _state(model)
    assert before[0] == after[0] and before[1] == after[1] and before[3] == after[3]
    assert all(g is None for g in after[2])
    assert before[4] == after[4] and after[4].count(True) == 15  # in-place ReLUs are in-place again


def test_model_left_as_it_was_after_an_error(vgg16: nn.Module) -> None:
    model = copy.deepcopy(vgg16).train()
    before = _state(model)
    with pytest.raises(UsageError, match="out of range"):
        layerscope.explain(model, torch.randn(1, 3, 32, 32), target=5000)
    assert _state(model)[0] == before[0] and _state(model)[3] == before[3] and _state(model)[4] == before[4]
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameters_and_outer_no_grad(vgg16: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    ref = layerscope.explain(vgg16, x, target=3)
    frozen = attach_info(copy.deepcopy(vgg16), vgg_info(vgg16))
    for p in frozen.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        got = layerscope.explain(frozen, x, target=3)
    for n in ref.layers:
        np.testing.assert_allclose(got.cams[n], ref.cams[n], rtol=1e-6, atol=1e-12)


def test_batch_with_one_target_per_image(vgg16: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    both = layerscope.explain(vgg16, x, target=[3, 9], layers="block4_*")
    assert both.layers == ["block4_conv1", "block4_conv2", "block4_conv3"]
    assert both.targets.tolist() == [3, 9]
    for i, t in enumerate((3, 9)):
        one = layerscope.explain(vgg16, x[i : i + 1], target=t, layers="block4_*")
        for n in both.layers:
            peak = float(one.cams[n][0].max())
            np.testing.assert_allclose(both.cams[n][i], one.cams[n][0], rtol=1e-4, atol=1e-5 * peak)
    probs = torch.softmax(vgg16(x), dim=1)
    np.testing.assert_allclose(both.probabilities, [probs[0, 3].item(), probs[1, 9].item()], rtol=1e-4)


def test_default_target_is_top1(vgg16: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    exp = layerscope.explain(vgg16, x, layers="block5_conv3")
    assert int(exp.targets[0]) == int(vgg16(x).argmax())


def test_target_by_class_name(vgg16: nn.Module) -> None:
    names = [f"c{i}" for i in range(1000)]
    names[281] = "tabby"
    info = vgg_info(vgg16, class_names=names)
    exp = layerscope.explain(vgg16, torch.randn(1, 3, 32, 32), layers="block5_conv3", target="tabby", info=info)
    assert int(exp.targets[0]) == 281 and exp.class_name(0) == "tabby"
    with pytest.raises(UsageError, match="tabby"):
        layerscope.explain(vgg16, torch.randn(1, 3, 32, 32), layers="block5_conv3", target="tabyb", info=info)


def test_unknown_layer_lists_close_matches(vgg16: nn.Module) -> None:
    with pytest.raises(UsageError, match=r"block5_conv3") as e:
        layerscope.explain(vgg16, torch.randn(1, 3, 32, 32), layers="block5_cnv3")
    assert "unknown layer" in str(e.value)
    with pytest.raises(UsageError, match="matches no layer"):
        layerscope.explain(vgg16, torch.randn(1, 3, 32, 32), layers="block9_*")


def test_unknown_method_lists_valid_ones(tiny: TinyNet) -> None:
    with pytest.raises(UsageError, match="gradcam"):
        layerscope.explain(tiny, X_TINY, method="gradcm")
    with pytest.raises(UsageError, match="guided_grads"):
        layerscope.explain(tiny, X_TINY, guided=True)


def test_model_without_conv_layer() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ModelError, match="no Conv2d"):
        layerscope.explain(model, torch.randn(1, 3, 2, 2))


def test_every_conv2d_in_forward_order_for_a_plain_model() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Conv2d(4, 4, 3, padding=1)  # registered first, runs second
            self.early = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.late(torch.relu(self.early(x))).mean(dim=(2, 3)))

    exp = layerscope.explain(Net(), torch.randn(1, 3, 8, 8))
    assert exp.layers == ["early", "late"]


class NaNAt(nn.Module):
    """Sets one position of its input to NaN (an activation with NaN; the next module heals it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :, 0, 0] = float("nan")
        return x


class Heal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(x, nan=0.0)


def test_nonfinite_activations_are_reported_not_propagated() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 2, 1), NaNAt(), Heal(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)
    ).eval()
    with pytest.warns(UserWarning, match="NaN or inf in the maps of 1"):
        exp = layerscope.explain(model, torch.randn(1, 3, 4, 4), layers=["0", "1"], target=0)
    assert np.isfinite(exp.cams["1"]).all() and exp.cams["1"][0, 0, 0] == 0


def test_nan_output_is_a_model_error() -> None:
    # Issue 9 #4: a model whose output is NaN is not explained (p = nan, argmax of NaN).
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[3].bias.fill_(float("nan"))
    with pytest.raises(ModelError, match="output is NaN or inf for image 0"):
        layerscope.explain(model, torch.randn(1, 3, 4, 4))
    with pytest.raises(ModelError, match="output is NaN or inf"):
        layerscope.explain(model, torch.randn(1, 3, 4, 4), method="scorecam")


class FunctionalInplace(nn.Module):
    """conv → F.relu(inplace=True): a functional in-place op changes the conv's output."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.inplace = inplace  # a plain attribute named like the module flag: must be left alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv(x), inplace=self.inplace)
        return self.head(a.mean(dim=(2, 3)))


def test_functional_inplace_op_on_a_captured_output_is_still_correct() -> None:
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(12))
    inplace, plain = FunctionalInplace(True), FunctionalInplace(False)
    plain.load_state_dict(inplace.state_dict())
    forwards = []
    handle = inplace.register_forward_pre_hook(lambda m, i: forwards.append(1))
    got = layerscope.explain(inplace, x, layers="conv", target=[0, 2])
    handle.remove()
    assert len(forwards) == 2  # the in-place change is detected; the second pass protects the output
    want = layerscope.explain(plain, x, layers="conv", target=[0, 2])
    np.testing.assert_allclose(got.cams["conv"], want.cams["conv"], rtol=1e-5, atol=1e-8)
    assert inplace.inplace is True  # its own attribute, untouched
    # The map is of the conv output itself (negative values included), not of its ReLU.
    kept = {}
    h = plain.conv.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    out = plain(x)
    h.remove()
    (g,) = torch.autograd.grad(out[0, 0] + out[1, 2], [kept["a"]])
    a = kept["a"].detach()
    assert float(a.min()) < 0
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    np.testing.assert_allclose(got.cams["conv"], cam.numpy(), rtol=1e-5, atol=1e-8)


def test_weights_digest_is_sha256_over_names_dtypes_shapes_and_bytes() -> None:
    import hashlib
    import struct

    from layerscope.capture import get_adapter

    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(2.0)
        lin.bias.fill_(-1.0)
    want = hashlib.sha256()
    for name, shape, value in (("bias", "(1,)", -1.0), ("weight", "(1, 1)", 2.0)):  # name order
        want.update(f"{name}|torch.float32|{shape}".encode())
        want.update(struct.pack("<f", value))
    assert get_adapter("torch").weights_digest(lin) == want.hexdigest()
    with torch.no_grad():
        lin.bias.fill_(-1.5)
    assert get_adapter("torch").weights_digest(lin) != want.hexdigest()
