"""The torch capture adapter (:mod:`layerscope.capture.torch`): correctness of the one pass
and of Grad-CAM, the model left alone, clear errors, one transfer to the host."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import layerscope
from conftest import TinyNet, not_inplace
from layerscope.errors import ModelError, UsageError
from layerscope.info import ModelInfo, attach_info

X_TINY = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])


def vgg_info(model: nn.Module, **facts: object) -> ModelInfo:
    """VGG16's friendly names (``block1_conv1`` … → the ReLU after each conv), found by
    walking ``model.features`` (independent of the zoo)."""
    names, block, conv = {}, 1, 0
    for i, m in enumerate(model.features):
        if isinstance(m, nn.ReLU):
            conv += 1
            names[f"block{block}_conv{conv}"] = f"features.{i}"
        elif isinstance(m, nn.MaxPool2d):
            block, conv = block + 1, 0
    return ModelInfo(layers=names, **facts)


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


# --- clear one-line errors (issue 9 #11) -----------------------------------------------------


def small_net(in_channels: int = 3, classes: int = 4, fixed: int | None = None) -> nn.Module:
    """conv → ReLU → max-pool ×3 (8× down-sampling) → global pool or a fixed-size flatten head."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(3):
        layers += [nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = 4
    if fixed is None:
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes)]
    else:
        head = [nn.Flatten(), nn.Linear(4 * (fixed // 8) ** 2, classes)]
    return nn.Sequential(*layers, *head).eval()


def test_fixed_input_size_model_names_the_size_option() -> None:
    model = small_net(fixed=32)
    layerscope.explain(model, torch.randn(1, 3, 32, 32))  # its own size works
    with pytest.raises(UsageError, match=r"does not take 64×64 inputs .*fixed input size.*--size N") as e:
        layerscope.explain(model, torch.randn(1, 3, 64, 64))
    assert "\n" not in str(e.value)


def test_input_smaller_than_the_down_sampling() -> None:
    model = small_net()
    with pytest.raises(UsageError, match=r"the 4×4 input is smaller than the network's down-sampling"):
        layerscope.explain(model, torch.randn(1, 3, 4, 4))
    with pytest.raises(UsageError, match="smaller than the network's down-sampling"):
        layerscope.capture.get_adapter("torch").layer_shapes(model, (4, 4))


def test_one_channel_model_given_rgb() -> None:
    model = small_net(in_channels=1)
    with pytest.raises(UsageError, match="the model takes 1-channel images but was given 3 channels"):
        layerscope.explain(model, torch.randn(1, 3, 16, 16))
    exp = layerscope.explain(model, torch.randn(1, 1, 16, 16))
    assert len(exp.layers) == 3
    rows = layerscope.capture.get_adapter("torch").layer_shapes(model, (16, 16))  # listed with 1 channel
    assert [r.shape for r in rows] == [(4, 16, 16), (4, 8, 8), (4, 4, 4)]


def test_float16_model_runs_with_float32_map_math() -> None:
    model = small_net()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = layerscope.explain(model, x, target=1)
    half = layerscope.explain(copy.deepcopy(model).half(), x, target=1)
    assert half.targets.tolist() == [1, 1]
    for name in ref.layers:
        assert half.cams[name].dtype == np.float32
        peak = max(float(ref.cams[name].max()), 1e-12)
        np.testing.assert_allclose(half.cams[name], ref.cams[name], atol=2e-2 * peak, err_msg=name)


def test_model_on_meta_device() -> None:
    with torch.device("meta"):
        model = small_net()
    with pytest.raises(ModelError, match="'meta' device"):
        layerscope.explain(model, torch.randn(1, 3, 16, 16))


def test_zero_class_output() -> None:
    with pytest.raises(ModelError, match="0 classes"):
        layerscope.explain(small_net(classes=0), torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (2**70, "class index 1180591620717411303424 is out of range for a model with 4 classes"),
        (99999999999999999999, "class index 99999999999999999999 is out of range"),
        (1.7, "target 1.7 is not a whole number"),
        (True, "target True is a bool"),
        ([1, True], "target True is a bool"),
        (np.bool_(False), "is a bool"),
        (-1, "class index -1 is out of range"),
        ([1, 2, 3], "3 targets for 2 images"),
        (object(), "is not a class index"),
    ],
)
def test_bad_targets_are_usage_errors(target: object, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        layerscope.explain(small_net(), torch.randn(2, 3, 16, 16), target=target)


def test_whole_number_targets_of_any_type() -> None:
    model, x = small_net(), torch.randn(2, 3, 16, 16)
    ref = layerscope.explain(model, x, target=[1, 3])
    for t in ([1.0, 3.0], np.array([1, 3]), torch.tensor([1, 3]), ["1", "3"]):
        assert layerscope.explain(model, x, target=t).targets.tolist() == [1, 3]
    assert ref.targets.tolist() == [1, 3]


# --- the graph walk, devices, precision, one transfer (issue 10) ------------------------------


def test_deepest_captured_activations() -> None:
    from layerscope.capture._autograd import deepest

    x = torch.randn(1, 2, requires_grad=True)
    a = x * 2
    b = torch.relu(a)
    c, d = b * 3, b + 1  # two branches above b
    e = c * d
    assert [t is a for t in deepest({"a": a, "c": c, "d": d, "e": e})] == [True]
    got = deepest({"c": c, "d": d, "e": e})
    assert len(got) == 2 and got[0] is c and got[1] is d
    assert deepest({"e": e})[0] is e


def test_deepest_walk_visits_each_node_once() -> None:
    # 300 captured branches over one shared 300-op trunk: a walk per layer would expand the
    # trunk 300 times (~90,000 expansions); one shared memo expands each node about twice.
    from layerscope.capture._autograd import _children, deepest

    x = torch.randn(3, requires_grad=True)
    h = x
    for _ in range(300):
        h = h * 1.0001
    acts = {f"b{i}": h + i for i in range(300)}
    expanded: list[object] = []

    def counting(node: object) -> list[object]:
        expanded.append(node)
        return _children(node)

    out = deepest(acts, children=counting)
    assert len(out) == 300  # no branch lies below another
    assert len(expanded) <= 2 * (300 + 300 + 2)


def test_resolve_device() -> None:
    from layerscope.capture.torch import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="device 'cuda:1' is not available"):
            resolve_device("cuda:1")
        with pytest.raises(UsageError, match="not available"):
            layerscope.explain(small_net(), torch.randn(1, 3, 16, 16), device="cuda")


def _tf32_state() -> tuple:
    b = torch.backends
    return (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, torch.get_float32_matmul_precision())


def test_precision_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_net()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ref = layerscope.explain(model, x, target=[0, 2])
    before = _tf32_state()
    seen = []
    real_forward = model.forward

    def spy(inp: torch.Tensor) -> torch.Tensor:
        seen.append(
            (_tf32_state(), torch.is_autocast_enabled("cpu"), inp.is_contiguous(memory_format=torch.channels_last))
        )
        return real_forward(inp)

    monkeypatch.setattr(model, "forward", spy)
    high = layerscope.explain(model, x, target=[0, 2], precision="highest", device="cpu")
    assert seen[-1][0][:2] == ("ieee", "ieee") and _tf32_state() == before  # off for the pass, restored
    for n in ref.layers:
        np.testing.assert_allclose(high.cams[n], ref.cams[n], rtol=1e-6, atol=1e-9)
    fast = layerscope.explain(model, x, target=[0, 2], precision="fast")
    assert seen[-1][1:] == (False, True)  # on the CPU: channels-last inputs, no autocast
    for n in ref.layers:
        assert fast.cams[n].dtype == np.float32
        assert np.corrcoef(fast.cams[n].ravel(), ref.cams[n].ravel())[0, 1] > 0.99
    from layerscope.capture._autograd import precision_mode

    with precision_mode("fast", torch.device("cuda")) as dtype:  # the dtype only; nothing runs on CUDA
        assert dtype == torch.float16
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        layerscope.explain(model, x, precision="fp8")


#: Tensor calls that copy to the host or wait for the device (``.to`` is left out: on the CPU
#: the input's own copy is one; maps_to_host's single copy is what is counted).
_TRANSFERS = {"cpu", "numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__"}


class CountTransfers(TorchFunctionMode):
    """Counts the tensor calls that copy to the host or synchronise with the device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in _TRANSFERS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "xgradcam", "hirescam"])
def test_one_host_transfer_for_a_13_layer_tour(vgg16: nn.Module, method: str) -> None:
    from layerscope.capture import CaptureRequest, get_adapter
    from layerscope.methods import get_method

    adapter = get_adapter("torch")
    layers = adapter.resolve_layers(vgg16, None, vgg_info(vgg16))
    request = CaptureRequest(fn=get_method(method).fn, label=method)
    x = torch.randn(2, 3, 32, 32)
    for target in (None, [3, 7]):
        with CountTransfers() as mode:
            result = adapter.run(vgg16, x, layers, target, request)
        assert len(result.layers) == 13
        assert mode.calls == ["numpy"], mode.calls  # all maps, flags, outputs, targets: one copy
