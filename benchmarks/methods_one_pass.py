"""Several gradient methods at every layer (issue 20): one layerscope pass against torchcam's
one pass per method and pytorch-grad-cam's one pass per method and layer.

VGG16 (random weights), its 13 conv layers (at their ReLUs), one 224² image, the gradient
methods Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM (which torchcam and pytorch-grad-cam both
have) and HiResCAM (pytorch-grad-cam only). Interleaved, after a warm-up, it times:

* layerscope ``explain_many(model, x, methods)``: every method from one forward + one
  backward (``methods.one_pass``);
* layerscope ``explain`` once per method (what ``explain_many`` did before);
* torchcam: one extractor per method over the 13 layers (one forward + backward each);
* pytorch-grad-cam: one call per method and layer (where it imports: it needs torchvision,
  so run this in a venv that has it).

The torchcam ratio is over the four methods torchcam has (layerscope's time for the same
four); the goal is ≥ 4× faster than torchcam::

    python benchmarks/methods_one_pass.py [--repeats 5] [--size 224] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable

import torch

import layerscope
from layerscope.info import ModelInfo
from layerscope.models import vgg
from tour_vgg16 import median_times  # the interleaved timing, shared by the benchmarks

FOUR = ("gradcam", "gradcam++", "xgradcam", "layercam")
FIVE = (*FOUR, "hirescam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = vgg.VGG16().eval()
    info = ModelInfo(layers=vgg.make_features()[1])  # block1_conv1 … at the ReLUs
    relus = [model.get_submodule(p) for p in info.layers.values()]
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = int(model(x).argmax())

    contenders: dict[str, Callable[[], object]] = {
        "layerscope explain_many, 5 methods, 1 pass": lambda: layerscope.explain_many(
            model, x, FIVE, [target], info=info
        ),
        "layerscope explain_many, 4 methods, 1 pass": lambda: layerscope.explain_many(
            model, x, FOUR, [target], info=info
        ),
        "layerscope explain per method, 5 passes": lambda: [
            layerscope.explain(model, x, method=m, target=target, info=info) for m in FIVE
        ],
    }
    try:
        from torchcam import methods as tc

        def torchcam_four() -> None:
            for cls in (tc.GradCAM, tc.GradCAMpp, tc.XGradCAM, tc.LayerCAM):
                with cls(model, target_layer=relus) as extractor:
                    extractor(target, model(x))
                model.zero_grad(set_to_none=True)

        contenders["torchcam, 4 methods, 1 pass each"] = torchcam_four
    except ImportError:
        print("# torchcam not installed: skipped")
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        plain = vgg.VGG16().eval()
        plain.load_state_dict(model.state_dict())
        for m in plain.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        layers = [plain.get_submodule(p) for p in info.layers.values()]

        def pgc_five() -> None:
            for cls in (pgc.GradCAM, pgc.GradCAMPlusPlus, pgc.XGradCAM, pgc.LayerCAM, pgc.HiResCAM):
                for layer in layers:
                    with cls(model=plain, target_layers=[layer]) as cam:
                        cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])

        contenders["pytorch-grad-cam, 5 methods x 13 layers"] = pgc_five
    except ImportError as e:
        print(f"# pytorch-grad-cam not importable here ({e}): skipped")

    results = median_times(contenders, args.repeats, lambda: None)
    print(
        f"# VGG16 (random weights), 13 layers, {args.size}x{args.size}, batch 1, CPU, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}; median of {args.repeats} interleaved runs"
    )
    for name, t in results.items():
        print(f"{name:46s} {t * 1000:9.1f} ms")
    one5 = results["layerscope explain_many, 5 methods, 1 pass"]
    per = results["layerscope explain per method, 5 passes"]
    print(f"{'per-method explain / one pass (5 methods)':46s} {per / one5:6.2f}x")
    if "torchcam, 4 methods, 1 pass each" in results:
        r = results["torchcam, 4 methods, 1 pass each"] / results["layerscope explain_many, 4 methods, 1 pass"]
        print(f"{'torchcam / layerscope (4 methods)':46s} {r:6.2f}x  (goal >= 4x)")
    if "pytorch-grad-cam, 5 methods x 13 layers" in results:
        r = results["pytorch-grad-cam, 5 methods x 13 layers"] / one5
        print(f"{'pytorch-grad-cam / layerscope (5 methods)':46s} {r:6.2f}x")


if __name__ == "__main__":
    main()
