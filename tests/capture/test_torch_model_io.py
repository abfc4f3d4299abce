"""A torch model's own errors said as the model's (issue 18 item 15):
:func:`layerscope.capture.torch.model_io.forward`."""

from __future__ import annotations

import sys

import pytest
import torch
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
