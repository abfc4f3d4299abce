"""The torch capture on a CUDA device (issue 10): GPU maps agree with CPU maps at
``precision="highest"``, one host transfer per batch, memory below torchcam's, "fast" close
to "highest". Skipped where CUDA is not available."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_capture import vgg_info
from torch import nn
from torch.overrides import TorchFunctionMode

import layerscope
from conftest import minmax
from layerscope.capture import CaptureRequest, get_adapter
from layerscope.info import ModelInfo
from layerscope.methods import get_method

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def pair(vgg16_random: nn.Module) -> tuple[nn.Module, nn.Module, ModelInfo]:
    cpu = copy.deepcopy(vgg16_random).eval()
    return cpu, copy.deepcopy(cpu).cuda(), vgg_info(cpu)


def test_highest_precision_gpu_maps_equal_cpu_maps(pair: tuple) -> None:
    cpu, gpu, info = pair
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = layerscope.explain(cpu, x, target=[3, 7], info=info)
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    got = layerscope.explain(gpu, x.cuda(), target=[3, 7], info=info, precision="highest")
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before
    for n in ref.layers:
        assert np.abs(minmax(got.cams[n]) - minmax(ref.cams[n])).max() <= 1e-2, n


def test_device_argument_moves_the_model_for_the_call_only(pair: tuple) -> None:
    cpu, _, info = pair
    x = torch.randn(1, 3, 32, 32)
    ref = layerscope.explain(cpu, x, target=1, info=info)
    got = layerscope.explain(cpu, x, target=1, info=info, device="cuda", precision="highest")
    assert next(cpu.parameters()).device.type == "cpu"
    for n in ref.layers:
        assert np.abs(minmax(got.cams[n]) - minmax(ref.cams[n])).max() <= 1e-2, n


class CountSyncs(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in {"cpu", "numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__"}:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_one_host_transfer_per_batch_on_cuda(pair: tuple) -> None:
    _, gpu, info = pair
    adapter = get_adapter("torch")
    layers = adapter.resolve_layers(gpu, None, info)
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with CountSyncs() as mode:
        result = adapter.run(gpu, x, layers, None, CaptureRequest(fn=get_method("gradcam").fn))
    assert len(result.layers) == 13 and mode.calls == ["numpy"]


def test_peak_memory_below_torchcam(pair: tuple) -> None:
    torchcam = pytest.importorskip("torchcam.methods")
    _, gpu, info = pair
    x = torch.randn(16, 3, 128, 128, device="cuda")
    relus = [gpu.get_submodule(p) for p in info.layers.values()]

    def peak(fn) -> int:  # type: ignore[no-untyped-def]
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    def ours() -> None:
        layerscope.explain(gpu, x, target=1, info=info)

    def theirs() -> None:
        with torchcam.GradCAM(gpu, target_layer=relus) as extractor:
            extractor(1, gpu(x))
        gpu.zero_grad(set_to_none=True)

    assert peak(ours) < peak(theirs)


def test_fast_precision_is_close_to_highest(pair: tuple) -> None:
    _, gpu, info = pair
    x = torch.randn(2, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    high = layerscope.explain(gpu, x, target=[3, 7], info=info, precision="highest")
    fast = layerscope.explain(gpu, x, target=[3, 7], info=info, precision="fast")
    for n in high.layers:
        r = np.corrcoef(fast.cams[n].ravel(), high.cams[n].ravel())[0, 1]
        assert r >= 0.95, (n, r)
