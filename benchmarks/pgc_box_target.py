"""A one-off cross-check of the box target (``layerscope.targets.box``) against pytorch-grad-cam
1.5.7's ``FasterRCNNBoxScoreTarget``, Grad-CAM at every conv layer of a small detector.

pytorch-grad-cam imports torchvision, which layerscope's own environment lacks, so this runs
in a separate one (see ``benchmarks/pgc_new_methods.py``)::

    PYTHONPATH=src /tmp/pgc/bin/python benchmarks/pgc_box_target.py [--size 64]

The detector stands in for torchvision's Faster R-CNN: a random-weight conv backbone whose
heads move eight fixed anchors (x0, y0, x1, y1) and score them; in eval mode it returns
torchvision's output, one dict of ``boxes``, ``labels``, ``scores`` per image. The boxes
explained are the model's own detections, each moved by a few pixels (IoU ≈ 0.8 with its
detection). pytorch-grad-cam's resize to the input is switched off, so both maps are compared
raw, at the layer's resolution (no min-max). Printed per layer: the largest absolute
difference, and that relative to the map's maximum. ``match="best"`` is pytorch-grad-cam's
rule (only the best-IoU detection) and must agree; the default ``match="all"`` sums every
matching detection, so it agrees only where one detection matches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np


def _detector(size: int) -> Any:
    import torch
    from torch import nn

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1, stride=2),
                nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=1, stride=2),
                nn.ReLU(),
            )
            a, feats = 8, 16 * (size // 4) ** 2
            g = torch.Generator().manual_seed(1)
            xy = torch.rand(a, 2, generator=g) * size * 0.6
            wh = size * (0.15 + 0.2 * torch.rand(a, 2, generator=g))
            self.register_buffer("anchors", torch.cat([xy, xy + wh], dim=1))
            self.box_head = nn.Linear(feats, a * 4)
            self.cls_head = nn.Linear(feats, a * 5)

        def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            f = self.backbone(x).flatten(1)
            n = x.shape[0]
            boxes = self.anchors + 3 * torch.tanh(self.box_head(f)).view(n, -1, 4)
            scores, labels = torch.softmax(self.cls_head(f).view(n, -1, 5), dim=-1).max(dim=-1)
            return [{"boxes": boxes[i], "labels": labels[i], "scores": scores[i]} for i in range(n)]

    return Detector().eval()


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from pytorch_grad_cam import GradCAM, base_cam
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    import layerscope
    from layerscope.targets import box

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    model = _detector(args.size)
    torch.manual_seed(2)
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        (det,) = model(x)
    order = torch.argsort(det["scores"], descending=True)[:3]
    base_cam.scale_cam_image = lambda cam, target_size=None: np.float32(cam)  # layer resolution, raw
    layers = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    worst = 0.0
    print(f"torch {torch.__version__}; detector input {args.size}×{args.size}; layers {', '.join(layers)}")
    for i in order.tolist():
        given = det["boxes"][i] + torch.tensor([1.5, -1.0, 2.0, 1.0])
        label = int(det["labels"][i])
        for match in ("best", "all"):
            ours = layerscope.explain(model, x, list(layers), "gradcam", box(given.tolist(), label=label, match=match))
            for name, module in layers.items():
                target = FasterRCNNBoxScoreTarget([label], given[None].numpy())
                with GradCAM(model, [module]) as cam:
                    theirs = cam(x, targets=[target])[0]
                a = ours.cams[name][0].astype(np.float64)
                diff = float(np.abs(a - theirs).max())
                rel = diff / max(float(np.abs(theirs).max()), 1e-30)
                if match == "best":  # pytorch-grad-cam's rule; "all" sums every match (differs where 2+ match)
                    worst = max(worst, rel)
                matched = ours.detections[0]["explained"]["matched"]
                print(
                    f"box {i} label {label} match={match:4s} {name:12s} max |Δ| {diff:.3e}  "
                    f"relative {rel:.3e}  (map max {float(np.abs(theirs).max()):.3e}, "
                    f"score {float(ours.scores[0]):.4f}, {matched} matching)"
                )
    print(f"worst relative difference, match='best' (pytorch-grad-cam's rule): {worst:.3e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
