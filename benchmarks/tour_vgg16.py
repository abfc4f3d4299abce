"""Speed of the 13-layer Grad-CAM tour on VGG16 against the peer libraries, in one run.

Random-weight VGG16, 224×224, batch 1, CPU. Prints the median of each measurement (with
a bare forward + backward to the 13 activations as the floor of any one-pass method) and the
ratios; layerscope's targets: ≤ 1.0× torchcam's GradCAM over the same 13 layers in one
call, ≥ 8× faster than captum's LayerGradCam called once per layer, and ≤ 2.2× a forward
pass alone.

    python benchmarks/tour_vgg16.py [--repeats 7] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

import layerscope
from layerscope.info import ModelInfo
from layerscope.models import vgg


def vgg16_names(model: torch.nn.Module) -> dict[str, str]:
    """VGG16's friendly names (``block1_conv1`` → the ReLU after the conv), from its modules."""
    names, block, conv = {}, 1, 0
    for i, m in enumerate(model.features):
        if isinstance(m, torch.nn.ReLU):
            conv += 1
            names[f"block{block}_conv{conv}"] = f"features.{i}"
        elif isinstance(m, torch.nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


def median_times(
    contenders: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median seconds of each contender. Runs are interleaved (one of each per round), so
    a change in the machine's load during the run affects all contenders alike."""
    for fn in contenders.values():  # warm-up
        fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    model = vgg.VGG16().to(device).eval()
    info = ModelInfo(layers=vgg16_names(model))
    relus = [model.get_submodule(p) for p in info.layers.values()]
    x = torch.randn(1, 3, args.size, args.size, device=device)
    target = int(model(x).argmax())

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def ours() -> None:
        layerscope.explain(model, x, target=target, info=info)

    kept: list[torch.Tensor] = []

    def floor() -> None:
        """The least any one-pass gradient method can do: keep the 13 activations, one
        backward to them (no maps, no bookkeeping)."""
        hooks = [r.register_forward_hook(lambda m, i, o: kept.append(o)) for r in relus]
        try:
            out = model(x.clone().requires_grad_())
        finally:
            for h in hooks:
                h.remove()
        torch.autograd.grad(out[0, target], kept)
        kept.clear()

    contenders: dict[str, Callable[[], object]] = {
        "forward pass alone (no_grad)": forward,
        "bare forward + backward to the 13 layers": floor,
        "layerscope explain, 13 layers": ours,
    }

    try:
        from torchcam.methods import GradCAM

        def torchcam_all() -> None:
            with GradCAM(model, target_layer=relus) as extractor:
                out = model(x)
                extractor(target, out)
            model.zero_grad(set_to_none=True)

        contenders["torchcam GradCAM, 13 layers in one call"] = torchcam_all
    except ImportError:
        print("torchcam not installed: skipped")

    try:
        from captum.attr import LayerGradCam

        plain = vgg.VGG16().to(device).eval()
        plain.load_state_dict(model.state_dict())
        for m in plain.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        layers = [plain.get_submodule(p) for p in info.layers.values()]

        def captum_loop() -> None:
            for layer in layers:
                LayerGradCam(plain, layer).attribute(x, target=target)

        contenders["captum LayerGradCam, once per layer"] = captum_loop
    except ImportError:
        print("captum not installed: skipped")

    results = median_times(contenders, args.repeats, sync)
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"VGG16 (random weights), {args.size}x{args.size}, batch 1, {dev}, torch {torch.__version__}")
    print(f"median of {args.repeats} interleaved runs after one warm-up\n")
    for name, t in results.items():
        print(f"{name:42s} {t * 1000:9.1f} ms")
    ours_t = results["layerscope explain, 13 layers"]
    print()
    r = ours_t / results["forward pass alone (no_grad)"]
    print(f"layerscope / forward pass        {r:6.2f}x  (target <= 2.2x)")
    r = ours_t / results["bare forward + backward to the 13 layers"]
    print(f"layerscope / bare fwd + bwd      {r:6.2f}x  (its overhead)")
    if "torchcam GradCAM, 13 layers in one call" in results:
        r = ours_t / results["torchcam GradCAM, 13 layers in one call"]
        print(f"layerscope / torchcam            {r:6.2f}x  (target <= 1.0x)")
    if "captum LayerGradCam, once per layer" in results:
        r = results["captum LayerGradCam, once per layer"] / ours_t
        print(f"captum per-layer / layerscope    {r:6.2f}x  (target >= 8x faster)")


if __name__ == "__main__":
    main()
