"""A one-off cross-check of finercam, kpcacam, fem and shapleycam against pytorch-grad-cam
1.5.7, at every conv layer (with its ReLU) of a random-weight VGG16 on skimage's photo.

pytorch-grad-cam imports torchvision, which layerscope's own environment lacks, so this runs
in a separate one::

    python3.11 -m venv /tmp/pgc
    /tmp/pgc/bin/pip install torch==2.14.1 torchvision==0.29.1 grad-cam==1.5.7 ttach \\
        opencv-python-headless scikit-learn scikit-image matplotlib tqdm
    PYTHONPATH=src /tmp/pgc/bin/python benchmarks/pgc_new_methods.py [--size 64]

Each layer gets its own pytorch-grad-cam object (it averages the layers it is given); its
resize to the input is switched off, so both maps are compared at the layer's resolution,
after the same min-max. Printed: per method and convention, the worst per-layer maximum
absolute difference and where it occurs. Conventions (see each method's docstring):

* finercam: pytorch-grad-cam weights the compared classes by their softmax probabilities
  (layerscope's ``weighting="probability"``); layerscope's default averages them.
* kpcacam: scikit-learn's eigenvector sign is arbitrary; layerscope's makes the map correlate
  with the mean activation. "as returned" compares with pytorch-grad-cam's map, "sign
  aligned" with its projection (before ReLU) turned to layerscope's sign.
* shapleycam: on the VGG16's logits the Hessian is 0 (a ReLU network) and the map is
  Grad-CAM's; on a sharpened softmax of them the second-order term is really there.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np


def _minmax(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    lo = m.min(axis=(-2, -1), keepdims=True)
    rng = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(rng > 0, (m - lo) / np.where(rng > 0, rng, 1), 0.0)


def _photo(size: int) -> Any:
    import skimage.data
    import torch
    from PIL import Image

    img = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((size, size), Image.BILINEAR), np.float32) / 255
    img = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))


def _model() -> Any:
    import torch
    from torch import nn

    from layerscope.info import ModelInfo, attach_info
    from layerscope.models import vgg

    torch.manual_seed(0)
    model = vgg.VGG16()
    vgg.init_vgg_(model, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0.0, 0.05, generator=gen)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return attach_info(model.eval(), ModelInfo(layers=vgg.make_features()[1]))


class Sharpened:
    """The VGG16 with a softmax of 5× its logits (module factory, so torch is imported late)."""

    @staticmethod
    def wrap(body: Any) -> Any:
        import torch
        from torch import nn

        from layerscope.info import ModelInfo, attach_info
        from layerscope.models import vgg

        class Probabilities(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = body

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.softmax(self.body(x) * 5.0, dim=1)

        wrapped = Probabilities().eval()
        names = {n: f"body.{p}" for n, p in vgg.make_features()[1].items()}
        return attach_info(wrapped, ModelInfo(layers=names, output="probabilities"))


def _pgc_maps(model: Any, x: Any, make: Any, **call: Any) -> dict[str, np.ndarray]:
    """pytorch-grad-cam's map of each named layer (one CAM object per layer, no resize)."""
    import pytorch_grad_cam.base_cam as base_cam

    from layerscope.info import model_info

    base_cam.scale_cam_image = lambda cam, target_size=None: np.float32(cam)  # layer resolution
    mods = dict(model.named_modules())
    out = {}
    for name, path in model_info(model).layers.items():
        cam = make(model, [mods[path]])
        out[name] = cam(input_tensor=x.clone(), targets=None, **call)
        cam.activations_and_grads.release() if hasattr(cam, "activations_and_grads") else None
    return out


def _kpca_projections(model: Any, x: Any, kernel: str) -> dict[str, np.ndarray]:
    """pytorch-grad-cam's kernel projection of each layer before ReLU (its own function)."""
    import torch
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    from layerscope.info import model_info

    mods = dict(model.named_modules())
    kept: dict[str, Any] = {}
    names = model_info(model).layers
    handles = [mods[p].register_forward_hook(lambda m, i, o, n=n: kept.__setitem__(n, o)) for n, p in names.items()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return {n: get_2d_projection_kernel(kept[n].numpy(), kernel, None) for n in names}


def _worst(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> tuple[float, str]:
    diffs = {n: float(np.abs(_minmax(ours[n]) - _minmax(theirs[n])).max()) for n in ours}
    name = max(diffs, key=diffs.__getitem__)
    return diffs[name], name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input side (KPCA is P×P per layer: keep it small)")
    args = parser.parse_args(argv)
    import torch
    from pytorch_grad_cam import FEM, KPCA_CAM, FinerCAM, GradCAM, ShapleyCAM

    import layerscope

    torch.set_num_threads(2)
    model, x = _model(), _photo(args.size)
    sharp = Sharpened.wrap(copy.deepcopy(model))
    rows: list[tuple[str, str, float, str]] = []

    def ls(m: Any, method: str, **options: Any) -> dict[str, np.ndarray]:
        exp = layerscope.explain(m, x, method=method, **options)
        return {n: exp.cams[n] for n in exp.layers}

    theirs = _pgc_maps(model, x, lambda m, t: FinerCAM(m, t, base_method=GradCAM))
    rows.append(
        (
            "finercam",
            "weighting='probability' (theirs)",
            *_worst(ls(model, "finercam", weighting="probability"), theirs),
        )
    )
    rows.append(("finercam", "weighting='equal' (default)", *_worst(ls(model, "finercam"), theirs)))
    theirs = _pgc_maps(model, x, lambda m, t: FEM(m, t))
    rows.append(("fem", "k=2", *_worst(ls(model, "fem"), theirs)))
    for kernel in ("rbf", "sigmoid"):
        ours = ls(model, "kpcacam", kernel=kernel, max_positions=None)
        theirs = _pgc_maps(model, x, lambda m, t, k=kernel: KPCA_CAM(m, t, kernel=k))
        off = sum(float(np.abs(_minmax(ours[n]) - _minmax(theirs[n])).max()) > 0.1 for n in ours)
        rows.append(
            (
                "kpcacam",
                f"kernel={kernel}, as returned ({off} of {len(ours)} layers off by > 0.1)",
                *_worst(ours, theirs),
            )
        )
        proj = _kpca_projections(model, x, kernel)
        aligned = {}
        for n, p in proj.items():
            ref = ours[n].ravel() - ours[n].mean()
            aligned[n] = np.maximum(p if np.dot(p.ravel() - p.mean(), ref) >= 0 else -p, 0)
        rows.append(("kpcacam", f"kernel={kernel}, sign aligned", *_worst(ours, aligned)))
        grid = ls(model, "kpcacam", kernel=kernel)
        rows.append(("kpcacam", f"kernel={kernel}, default max_positions=1024, aligned", *_worst(grid, aligned)))
    for label, m in (("logits (H = 0)", model), ("softmax(5·logits)", sharp)):
        theirs = _pgc_maps(m, x, lambda mm, t: ShapleyCAM(mm, t))
        rows.append(("shapleycam", label, *_worst(ls(m, "shapleycam"), theirs)))
        grad = ls(m, "gradcam")
        rows.append(("shapleycam", f"{label}: layerscope gradcam vs their shapleycam", *_worst(grad, theirs)))
    print(f"VGG16 (random weights), skimage chelsea at {args.size}×{args.size}, 13 layers; worst |Δ| after min-max")
    for method, convention, worst, where in rows:
        print(f"{method:11s} {convention:58s} {worst:.2e}  ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
