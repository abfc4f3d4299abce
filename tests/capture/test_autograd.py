"""The one backward pass and the one transfer (:mod:`layerscope.capture._autograd`), device
placement and precision of the torch adapter (:mod:`layerscope.capture.torch.device`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_capture import small_net, vgg_info
from torch import nn
from torch.overrides import TorchFunctionMode

import layerscope
from layerscope.errors import UsageError
from layerscope.info import attach_info


@pytest.fixture
def vgg16(vgg16_random: nn.Module) -> nn.Module:
    """A fresh copy per test, with VGG16's friendly names in its recorded ModelInfo."""
    model = copy.deepcopy(vgg16_random)
    return attach_info(model, vgg_info(model))


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


def test_hessian_to_maps_gives_each_layer_its_own_hessian_vector_product() -> None:
    from layerscope.capture._autograd import hessian_to_maps

    x = torch.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
    a = x * 1.0
    b = 2.0 * a
    y = 0.5 * (b**2).sum() + (a**3).sum()  # ∂y/∂a = 4a + 3a², H_aa·a = 4a + 6a²; ∂y/∂b = b + …
    kept: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    hessian_to_maps(y, torch.zeros(1), {"a": a, "b": b}, lambda n, act, g, hvp: kept.__setitem__(n, (act, g, hvp)), y)
    av = a.detach()
    torch.testing.assert_close(kept["a"][1], 4 * av + 3 * av**2)  # through b and directly
    torch.testing.assert_close(kept["a"][2], 4 * av + 6 * av**2)  # a's own block, not mixed with b's
    torch.testing.assert_close(kept["b"][1], 2 * av)  # ∂y/∂b = b (the a³ term does not pass through b)
    torch.testing.assert_close(kept["b"][2], 2 * av)  # H_bb·b = b
