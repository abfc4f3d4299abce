"""Regenerate docs/vit_layers.png, the README's picture of why a class-token ViT is explained
at each block's attention input.

A trained class-token demo ViT (:class:`layerscope.models.demo_vit.DemoViT` with
``global_pool="token"``) on the demo's sample image, Grad-CAM of the true class:

* top row, each block's **output** (``blocks.i``): the last one is blank — the head reads
  only the class token after it, so its patch tokens get no gradient;
* bottom row, each block's **attention input** (``blocks.i.norm1``, layerscope's default for
  a class-token ViT): every block, the last included, has a map.

The shipped demo ViT's weights by default (a class-token model, with registers), or a
class-token weights file::

    python scripts/regenerate_vit_picture.py [WEIGHTS]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "vit_layers.png"


def main(weights: str | None = None) -> None:
    from safetensors.torch import load_file

    import layerscope
    from layerscope.info import attach_info
    from layerscope.models import demo_vit
    from layerscope.models.demo import sample_image
    from layerscope.render.grid import draw_grid

    warnings.simplefilter("ignore")  # the blank block's own warning: it is the point of the picture
    model = demo_vit.DemoViT(global_pool="token")
    model.load_state_dict(load_file(weights or demo_vit.shipped_weights()))
    attach_info(model.eval(), demo_vit.info(global_pool="token"))
    image, label, _ = sample_image()
    blocks = [f"blocks.{i}" for i in range(demo_vit.DEPTH)]
    outputs = layerscope.explain(model, image, layers=blocks, target=label)
    inputs = layerscope.explain(model, image, target=label)  # the default layers: attention inputs
    rows = [[outputs.cams[b][0] for b in blocks], [inputs.cams[n][0] for n in inputs.layers]]
    labels = ["block output", "attention input (default)"]
    title = f"class-token demo ViT, Grad-CAM of '{inputs.class_name(0)}'"
    img, _ = draw_grid(outputs.images[0], rows, labels, [f"block {i + 1}" for i in range(demo_vit.DEPTH)], title=title)
    img.convert("RGB").quantize(256, dither=0).save(OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size // 1024} KB; blocked: {outputs.blocked}")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    main(*sys.argv[1:])
