"""GPU-first benchmark of the every-layer Grad-CAM tour (issue 10); also runs on the CPU.

For VGG16 (13 conv layers, at their ReLUs) and ResNet-50 (its 53 convolutions), random
weights, square inputs, it times in one process, interleaved, after a warm-up:

* the forward pass alone (``no_grad``);
* the floor: a bare forward + one backward to the chosen activations (no maps);
* layerscope ``explain`` at ``precision="default"`` and ``"fast"``;
* torchcam's ``GradCAM`` over the same layers in one call;
* pytorch-grad-cam (batch 1, one call per layer) and captum's ``LayerGradCam`` (batch 1,
  one call per layer), where installed.

It prints medians, the ratios that issue 10 sets targets for, the peak device memory of each
contender above the inputs (CUDA only), and the fidelity of ``"fast"``: the worst per-layer
Pearson correlation of its maps with ``precision="highest"``.

    python benchmarks/gpu.py --device cuda                       # the full table (≈ 2 min on an H100)
    python benchmarks/gpu.py --device cpu --size 64 --batches 1,4 --repeats 3 --models vgg16

ResNet-50 is a plain-torch copy with torchvision's module names (torchvision itself is used
when it can be imported).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import layerscope
from layerscope.info import ModelInfo
from layerscope.models import vgg
from layerscope.models.resnet import ResNet50

# --- models -----------------------------------------------------------------------------------


def build(name: str) -> tuple[nn.Module, dict[str, str]]:
    """A seeded random-weight model and its chosen layers ``{name: module path}``."""
    torch.manual_seed(0)
    if name == "vgg16":
        model = vgg.VGG16()
        names, block, conv = {}, 1, 0
        for i, m in enumerate(model.features):
            if isinstance(m, nn.ReLU):
                conv += 1
                names[f"block{block}_conv{conv}"] = f"features.{i}"
            elif isinstance(m, nn.MaxPool2d):
                block, conv = block + 1, 0
    else:
        try:
            import torchvision

            model = torchvision.models.resnet50()
        except Exception:  # torchvision missing, or not importable with this torch
            model = ResNet50()  # layerscope's plain-torch twin: torchvision's module names and keys
        with torch.no_grad():  # BN statistics that keep activations at a sane scale
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.fill_(1.0)
                    m.weight.uniform_(0.5, 1.0)
                    m.bias.uniform_(-0.1, 0.1)
        names = {p: p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return model.eval(), names


# --- timing -------------------------------------------------------------------------------------


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds of each contender, one run of each per round (load changes hit all alike)."""
    for fn in contenders.values():
        fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, fn in contenders.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak device memory (MB) that ``fn`` allocates above what is already there (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


# --- one (model, batch) row -----------------------------------------------------------------------


def row(name: str, batch: int, args: argparse.Namespace, device: torch.device) -> None:
    model, names = build(name)
    model.to(device)
    info = ModelInfo(layers=names)
    modules = [model.get_submodule(p) for p in names.values()]
    x = torch.randn(batch, 3, args.size, args.size, device=device, generator=None)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    tlist = target.tolist()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    kept: list[torch.Tensor] = []

    def floor() -> None:
        hooks = [m.register_forward_hook(lambda _m, _i, o: kept.append(o)) for m in modules]
        try:
            out = model(x.clone().requires_grad_())
        finally:
            for h in hooks:
                h.remove()
        torch.autograd.grad(out.gather(1, target[:, None]).sum(), kept)
        kept.clear()

    def ours(precision: str = "default") -> Callable[[], Any]:
        return lambda: layerscope.explain(model, x, target=tlist, info=info, precision=precision)

    contenders: dict[str, Callable[[], Any]] = {
        "forward alone": forward,
        "floor (fwd + bwd to layers)": floor,
        "layerscope default": ours("default"),
        "layerscope fast": ours("fast"),
    }
    try:
        from torchcam.methods import GradCAM

        def torchcam_all() -> None:
            with GradCAM(model, target_layer=modules) as extractor:
                out = model(x)
                extractor(tlist, out)
            model.zero_grad(set_to_none=True)

        contenders["torchcam GradCAM, 1 call"] = torchcam_all
    except ImportError:
        pass
    if batch == 1 and not args.no_per_layer:
        plain = build(name)[0].to(device)
        for m in plain.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        plain_layers = [plain.get_submodule(p) for p in names.values()]
        try:
            from captum.attr import LayerGradCam

            def captum_loop() -> None:
                for layer in plain_layers:
                    LayerGradCam(plain, layer).attribute(x, target=tlist)

            contenders["captum, 1 call/layer"] = captum_loop
        except ImportError:
            pass
        try:
            from pytorch_grad_cam import GradCAM as PGC
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            def pgc_loop() -> None:
                for layer in plain_layers:
                    with PGC(model=plain, target_layers=[layer]) as cam:
                        cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in tlist])

            contenders["pytorch-grad-cam, 1 call/layer"] = pgc_loop
        except ImportError:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleaved(contenders, args.repeats, sync)
        memory = {k: peak_memory(fn, device) for k, fn in contenders.items() if "call/layer" not in k}
        high = layerscope.explain(model, x, target=tlist, info=info, precision="highest")
        fast = layerscope.explain(model, x, target=tlist, info=info, precision="fast")
    worst = min((pearson(fast.cams[n], high.cams[n]), n) for n in high.layers)

    print(f"\n## {name}, {len(names)} layers, batch {batch}, {args.size}x{args.size}")
    for k, t in times.items():
        mem = memory.get(k)
        extra = f"   peak {mem:8.1f} MB" if mem is not None else ""
        print(f"{k:32s} {t * 1000:10.1f} ms   {batch / t:8.1f} img/s{extra}")
    ours_t = times["layerscope default"]
    print(
        f"layerscope / floor               {ours_t / times['floor (fwd + bwd to layers)']:6.2f}x "
        "(target <= 1.15x at b>=32)"
    )
    if "torchcam GradCAM, 1 call" in times:
        print(f"layerscope / torchcam            {ours_t / times['torchcam GradCAM, 1 call']:6.2f}x (target <= 0.9x)")
        m_ours, m_tc = memory.get("layerscope default"), memory.get("torchcam GradCAM, 1 call")
        if m_ours is not None and m_tc:
            print(f"peak memory layerscope / torchcam {m_ours / m_tc:5.2f}x (target <= 0.6x at VGG16 b64)")
    print(f"fast / default                   {times['layerscope fast'] / ours_t:6.2f}x")
    print(f"fast vs highest: worst per-layer Pearson r = {worst[0]:.4f} at {worst[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--models", default="vgg16,resnet50")
    parser.add_argument("--batches", default=None, help="comma-separated; default: 1,64 (VGG16), 1,32 (ResNet-50)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-per-layer", action="store_true", help="skip the one-call-per-layer peers")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from layerscope.capture.torch import resolve_device

    device = resolve_device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    tf32 = torch.backends.cuda.matmul.fp32_precision if hasattr(torch.backends.cuda.matmul, "fp32_precision") else "?"
    print(f"# layerscope GPU benchmark: {card}, torch {torch.__version__}, cuda matmul fp32 precision {tf32}")
    print(f"# medians of {args.repeats} interleaved runs after a warm-up; random weights")
    default_batches = {"vgg16": [1, 64], "resnet50": [1, 32]}
    for name in args.models.split(","):
        batches = [int(b) for b in args.batches.split(",")] if args.batches else default_batches[name]
        for b in batches:
            row(name, b, args, device)


if __name__ == "__main__":
    main()
