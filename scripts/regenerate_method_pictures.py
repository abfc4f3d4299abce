"""Regenerate the pictures of docs/methods.md: every CNN method on one image at one layer,
and the fusions beside the layer tour.

Both use the trained demo model on its built-in sample image (no network), so the maps mean
something: the object is known.

* ``docs/methods_gallery.png``: ``layerscope.grid`` of every CNN method (rows) at a middle
  and the last conv layer (columns), the same image and class for every method.
* ``docs/fusion_tour.png``: five frames of the Grad-CAM tour (block1 … block5's last conv
  layer) and, beside them, the frame each fusion adds (``layercam-fusion``, ``refinecam``,
  ``polycam``), from the maps of all 13 layers (Layer-CAM maps, as the LayerCAM paper fuses).

    python scripts/regenerate_method_pictures.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The methods a CNN has (the attention methods are for transformers), in registry order.
SKIP_KINDS = {"attention"}
LAYERS = ["block3_conv3", "block5_conv3"]
TOUR_LAYERS = ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]
FUSIONS = ["layercam-fusion", "refinecam", "polycam"]


def strip(frames: list, gap: int = 6) -> object:
    """Frames side by side on black, ``gap`` pixels apart."""
    from PIL import Image

    width = sum(f.width for f in frames) + gap * (len(frames) - 1)
    out = Image.new("RGB", (width, max(f.height for f in frames)), "black")
    x = 0
    for f in frames:
        out.paste(f, (x, 0))
        x += f.width + gap
    return out


def save(image: object, path: Path) -> None:
    """A 256-colour PNG (a third of the RGB file's size, no visible banding on these maps)."""
    image.convert("RGB").quantize(256, dither=0).save(path, optimize=True)  # type: ignore[attr-defined]


def main() -> None:
    import layerscope
    from layerscope.methods import get_method, list_methods
    from layerscope.models.demo import sample_image

    warnings.simplefilter("ignore")
    model = layerscope.load_model("demo")
    image, label, _ = sample_image()
    methods = [m for m in list_methods() if get_method(m).kind not in SKIP_KINDS]
    gallery = layerscope.grid(model, image, methods, layers=LAYERS, target=label, top_k=32)
    save(gallery, DOCS / "methods_gallery.png")

    exp = layerscope.explain(model, image, method="layercam", target=label)
    frames = {name: f for name, f in zip(exp.layers, exp.frames(), strict=True)}
    fused = []
    for name in FUSIONS:
        exp.fused(name)
        fused.append(exp.frames()[-1])
    save(strip([frames[n] for n in TOUR_LAYERS] + fused), DOCS / "fusion_tour.png")
    for p in ("methods_gallery.png", "fusion_tour.png"):
        print(f"docs/{p}: {(DOCS / p).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
