"""Every-block Grad-CAM tour of a vision transformer (issue 19): layerscope against the floor
and against pytorch-grad-cam's one-call-per-block loop.

A ViT-B/16-sized Hugging Face ``ViTForImageClassification`` (random weights, built from
``ViTConfig()``: 12 blocks, width 768, 224², 1,000 classes), every block explained at its
default layer (the attention input, ``layernorm_before``). In one process, interleaved, after
a warm-up, it times:

* the forward pass alone (``no_grad``);
* the floor: a bare forward + one backward to the chosen tensors (no maps);
* layerscope ``explain`` of all 12 blocks (one forward + one backward);
* pytorch-grad-cam's ``GradCAM`` with a ``reshape_transform``, one call per block (where
  pytorch-grad-cam imports: it needs torchvision, so run this in a venv that has it).

It prints medians and the ratios the issue sets goals for (tour ≤ 1.3× the floor, ≥ 8×
faster than the per-block loop), and checks that the maps agree (≤ 1e-4 after min-max)::

    python benchmarks/vit.py                      # batch 1 and 8, CPU
    python benchmarks/vit.py --device cuda --batches 1,8,32
    python benchmarks/vit.py --small              # a 4-block, width-64 model (a quick check)
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import layerscope
from gpu import interleaved  # the interleaved timing, shared by the benchmarks


def build(small: bool) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    if small:
        config = transformers.ViTConfig(
            hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128
        )
    else:
        config = transformers.ViTConfig(num_labels=1000)  # ViT-B/16 at 224²
    config._attn_implementation = "sdpa"  # what from_pretrained picks by default
    return transformers.ViTForImageClassification(config).eval()


class Logits(nn.Module):
    """The model's ``logits`` tensor, for pytorch-grad-cam (it expects a tensor output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo = a.min(axis=(-2, -1), keepdims=True)
    span = a.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0)


def row(model: nn.Module, batch: int, args: argparse.Namespace, device: torch.device) -> None:
    size = model.config.image_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(device)
    with torch.no_grad():
        target = model(pixel_values=x).logits.argmax(dim=1)
    tlist = target.tolist()
    exp = layerscope.explain(model, x, target=tlist)
    paths = list(exp.layers)
    modules = [model.get_submodule(p) for p in paths]
    grid = exp.cams[paths[0]].shape[-1]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward() -> None:
        with torch.no_grad():
            model(pixel_values=x)

    def floor() -> None:
        kept: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: kept.append(o)) for m in modules]
        try:
            out = model(pixel_values=x.clone().requires_grad_()).logits
        finally:
            for h in hooks:
                h.remove()
        torch.autograd.grad(out.gather(1, target[:, None]).sum(), kept)

    def ours() -> None:
        layerscope.explain(model, x, target=tlist)

    contenders: dict[str, Callable[[], None]] = {
        "forward alone": forward,
        f"floor (fwd + bwd to {len(paths)} tensors)": floor,
        f"layerscope, {len(paths)} blocks, 1 call": ours,
    }
    pgc_maps: dict[str, np.ndarray] = {}
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        wrapped = Logits(model)

        def reshape(t: torch.Tensor) -> torch.Tensor:
            return t[:, 1:, :].reshape(t.shape[0], grid, grid, t.shape[2]).permute(0, 3, 1, 2)

        def pgc_loop(keep: bool = False) -> None:
            for p, m in zip(paths, modules, strict=True):
                with GradCAM(model=wrapped, target_layers=[m], reshape_transform=reshape) as cam:
                    out = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in tlist])
                    if keep:
                        pgc_maps[p] = out

        contenders["pytorch-grad-cam, 1 call/block"] = pgc_loop
    except ImportError as e:
        print(f"# pytorch-grad-cam not importable here ({e}); run in a venv with torchvision for that row")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleaved(contenders, args.repeats, sync)
    print(f"\n## batch {batch}, {size}x{size}, {len(paths)} blocks ({paths[0]} …)")
    for k, t in times.items():
        print(f"{k:38s} {t * 1e3:9.1f} ms {batch / t:9.2f} img/s")
    ours_t = times[f"layerscope, {len(paths)} blocks, 1 call"]
    floor_t = times[f"floor (fwd + bwd to {len(paths)} tensors)"]
    print(f"{'layerscope / floor':38s} {ours_t / floor_t:.2f}x (goal <= 1.3x)")
    if "pytorch-grad-cam, 1 call/block" in times:
        loop_t = times["pytorch-grad-cam, 1 call/block"]
        print(f"{'pytorch-grad-cam / layerscope':38s} {loop_t / ours_t:.1f}x (goal >= 8x)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pgc_loop(keep=True)
        # pytorch-grad-cam resizes each map to the input (OpenCV) before its min-max: compare
        # there, by correlation, since the two bilinear resizes differ slightly at the borders
        from layerscope.resize import resize_bilinear

        worst = min(  # per image: each library's map of image i, min-max scaled as pytorch-grad-cam does
            float(
                np.corrcoef(
                    minmax(resize_bilinear(exp.cams[p][i : i + 1], (size, size))).ravel(), pgc_maps[p][i].ravel()
                )[0, 1]
            )
            for p in paths
            for i in range(batch)
        )
        print(f"{'worst per-block Pearson r vs pgc':38s} {worst:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="a 4-block, width-64 model")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build(args.small).to(device)
    print(
        f"# layerscope ViT benchmark: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load {os.getloadavg()[0]:.2f}; medians of {args.repeats} interleaved runs after a warm-up; random weights"
    )
    for b in (int(s) for s in args.batches.split(",")):
        row(model, b, args, device)


if __name__ == "__main__":
    main()
