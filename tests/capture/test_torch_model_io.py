"""A torch model's inputs and outputs (:mod:`layerscope.capture.torch.model_io`): the model's
own errors said as the model's (issue 18 item 15), one-line errors for a wrong input size,
channels or dtype, and the targets checked."""

from __future__ import annotations

import copy
import re
import sys

import numpy as np
import pytest
import torch
from helpers_capture import small_net
from torch import nn

import layerscope
from layerscope.errors import ModelError, UsageError
from layerscope.info import ModelInfo


class Raises(nn.Module):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv(x)
        raise self.exc


def test_an_exception_in_forward_is_the_models_error_with_its_type_and_message() -> None:
    with pytest.raises(ModelError, match=r"the model's forward raised KeyError: 'no such head'") as e:
        layerscope.explain(Raises(KeyError("no such head")), torch.rand(1, 3, 8, 8))
    assert "input size" not in str(e.value)
    assert isinstance(e.value.__cause__, KeyError)


def test_a_shape_error_in_forward_hints_at_the_input_size() -> None:
    model = Raises(ValueError("Input image size (8*8) doesn't match model (64*64)."))
    with pytest.raises(ModelError, match=r"raised ValueError: Input image size .*is 8×8 the input size it takes\?"):
        layerscope.explain(model, torch.rand(1, 3, 8, 8))


def test_the_model_infos_size_hint_is_passed_on() -> None:
    model = Raises(ValueError("Input image size (8*8) doesn't match model (64*64)."))
    info = ModelInfo(input_size=(64, 64))  # ModelInfo.size_hint() says it
    with pytest.raises(ModelError, match=r"\(this model expects 64×64 input: --size 64\)"):
        layerscope.explain(model, torch.rand(1, 3, 8, 8), info=info)


def test_sys_exit_in_forward_is_the_models_error_not_a_silent_exit() -> None:
    with pytest.raises(ModelError, match=r"the model's forward called sys.exit\(3\)"):
        layerscope.explain(Raises(SystemExit(3)), torch.rand(1, 3, 8, 8))


def test_layerscopes_own_errors_from_hooks_pass_unchanged() -> None:
    class Dict(nn.Module):
        def forward(self, x: torch.Tensor) -> dict:
            return {"x": x}

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.d = Dict()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.d(x)["x"].mean(dim=(2, 3))

    with pytest.raises(UsageError, match="layer 'd' outputs a dict, not a"):
        layerscope.explain(Model(), torch.rand(1, 3, 8, 8), layers="d")


def test_keyboard_interrupt_is_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        layerscope.explain(Raises(KeyboardInterrupt()), torch.rand(1, 3, 8, 8))
    assert sys.exc_info() == (None, None, None)


# --- clear one-line errors (issue 9 #11) -----------------------------------------------------


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


def test_a_detectors_output_gives_each_classs_best_detection_score() -> None:
    from layerscope.capture.torch.model_io import is_detections, select_output

    s = torch.tensor([0.9, 0.2, 0.7], requires_grad=True)
    dets = [
        {"boxes": torch.zeros(3, 4), "labels": torch.tensor([2, 0, 2]), "scores": s},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)},
    ]
    assert is_detections(dets) and not is_detections([]) and not is_detections([{"boxes": 1}])
    out = select_output(dets)
    torch.testing.assert_close(out.detach(), torch.tensor([[0.2, 0.0, 0.9], [0.0, 0.0, 0.0]]))
    out[0, 2].backward()
    assert s.grad.tolist() == [1.0, 0.0, 0.0]  # the best detection of class 2, in the graph
