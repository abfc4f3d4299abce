"""Every method's every-layer tour against pytorch-grad-cam's per-layer loop, and what a
fusion adds to a tour (issue 20).

VGG16 (random weights), its 13 conv layers, one image. For each method pytorch-grad-cam
also has, it times (interleaved, medians, after a warm-up) layerscope's one ``explain`` of
all 13 layers against pytorch-grad-cam's one call per layer for the same method, and prints
the ratio. Then it times a Layer-CAM tour and each fusion on its explanation
(``exp.fused(...)``) and prints the fusion's extra cost (goal: < 5 %).

pytorch-grad-cam needs torchvision, so run it in a venv that has both::

    python benchmarks/methods_vs_pgc.py [--size 224] [--repeats 3] [--methods gradcam,layercam]

The perturbation methods (Score-CAM, Ablation-CAM) cost a pass per channel in both
libraries (every channel in both here): they are timed at ``--size-perturbation`` (default
64).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM progress bars
import warnings
from collections.abc import Callable

import torch

import layerscope
from layerscope.info import ModelInfo
from layerscope.models import vgg
from tour_vgg16 import median_times  # the interleaved timing, shared by the benchmarks

#: layerscope name → pytorch-grad-cam class name (the methods both have).
PEERS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM",
    "eigencam": "EigenCAM",
    "finercam": "FinerCAM",
    "shapleycam": "ShapleyCAM",
    "kpcacam": "KPCA_CAM",
    "fem": "FEM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}
PERTURBATION = ("scorecam", "ablationcam")
FUSIONS = ("layercam-fusion", "refinecam", "polycam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--size-perturbation", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(PEERS))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = vgg.VGG16().eval()
    info = ModelInfo(layers=vgg.make_features()[1])  # block1_conv1 … at the ReLUs
    plain = vgg.VGG16().eval()
    plain.load_state_dict(model.state_dict())
    for m in plain.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    layers = [plain.get_submodule(p) for p in info.layers.values()]
    print(
        f"# VGG16 (random weights), 13 layers, batch 1, CPU, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, load {os.getloadavg()[0]:.2f}; medians of {args.repeats} interleaved runs"
    )
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as e:
        pgc = None
        print(f"# pytorch-grad-cam not importable here ({e}): layerscope's times only")
    print(
        "| method | size | layerscope, 13 layers, 1 call | pytorch-grad-cam, 13 calls | ratio |\n|---|---|---|---|---|"
    )
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        size = args.size_perturbation if name in PERTURBATION else args.size
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        target = int(model(x).argmax())
        opts: dict[str, object] = {}
        fns: dict[str, Callable[[], object]] = {
            "ours": lambda x=x, t=target, n=name, o=opts: layerscope.explain(
                model, x, method=n, target=t, info=info, **o
            )
        }
        if pgc is not None and hasattr(pgc, PEERS[name]):
            cls = getattr(pgc, PEERS[name])

            def loop(cls: type = cls, x: torch.Tensor = x, t: int = target) -> None:
                for layer in layers:
                    with cls(model=plain, target_layers=[layer]) as cam:
                        cam(input_tensor=x, targets=[ClassifierOutputTarget(t)])

            fns["pgc"] = loop
        t = median_times(fns, args.repeats, lambda: None)
        peer = f"{t['pgc'] * 1e3:.0f} ms" if "pgc" in t else "—"
        ratio = f"{t['pgc'] / t['ours']:.1f}×" if "pgc" in t else "—"
        print(f"| `{name}` | {size}² | {t['ours'] * 1e3:.0f} ms | {peer} | {ratio} |", flush=True)

    # A fusion costs a few ms against a tour of hundreds: timing "tour + fusion" against
    # "tour" reads the tour's own spread (±10 % here). So the fusion is timed by itself on the
    # tour's explanation (median of 21 calls) and divided by the tour's median.
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    t = median_times({"tour": lambda: layerscope.explain(model, x, method="layercam", info=info)}, 5, lambda: None)
    exp = layerscope.explain(model, x, method="layercam", info=info)
    for f in FUSIONS:
        exp.fused(f)  # warm-up
        own = []
        for _ in range(21):
            t0 = time.perf_counter()
            exp.fused(f)
            own.append(time.perf_counter() - t0)
        cost = statistics.median(own)
        share = 100 * cost / t["tour"]
        print(f"fusion {f:16s} {cost * 1e3:.1f} ms: adds {share:.2f} % to a {t['tour'] * 1e3:.0f} ms tour")


if __name__ == "__main__":
    main()
