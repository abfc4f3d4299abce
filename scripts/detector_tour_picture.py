"""Make docs/demo-detector-tour.png: the demo detector's Grad-CAM tour of one detection on a
3-object scene, every default layer, as one picture.

    PYTHONPATH=src python scripts/detector_tour_picture.py

The scene is the first of seed ``SAMPLE_SEED`` (never trained on) with three objects all
detected; the detection explained is its highest-scoring one. The first tile shows the
scene with the ground-truth boxes (white) and that detection (yellow); the others are
Grad-CAM at each default layer, for that detection's score.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import layerscope
from layerscope.datasets.scenes import make_scene
from layerscope.evaluate.boxes import MatchedDetection, match
from layerscope.models import demo_detector as D

OUT = Path(__file__).resolve().parents[1] / "docs" / "demo-detector-tour.png"
TILE = 208
COLUMNS = 4


def _scene() -> tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray], list[dict[str, torch.Tensor]]]:
    model = layerscope.load_model("demo-detector")
    for index in range(200):
        image, (boxes, labels), _ = make_scene(D.SAMPLE_SEED, index)
        if len(labels) != 3:
            continue
        dets = D.detect(model, image[None])
        if all(match(dets[0], b, int(c)) >= 0 for b, c in zip(boxes, labels, strict=True)):
            return index, image, (boxes, labels), dets
    raise SystemExit("no fully detected 3-object scene in the first 200")


def main() -> int:
    torch.set_num_threads(1)
    model = layerscope.load_model("demo-detector")
    index, image, (boxes, _), dets = _scene()
    best = dets[0]
    box, label, score = best["boxes"][0].numpy(), int(best["labels"][0]), float(best["scores"][0])
    exp = layerscope.explain(model, image, target=MatchedDetection([box], [label]))
    # The recipe's captions (layer, output size): the default ones would name the class with
    # a softmax over the per-class best scores, which means nothing for a detection.
    frames = exp.frames(caption="recipe")
    side = TILE - 16
    first = Image.fromarray(image).resize((side, side), Image.NEAREST)
    draw = ImageDraw.Draw(first)
    f = side / image.shape[0]
    for b in boxes:
        draw.rectangle([float(v) * f for v in b], outline=(255, 255, 255), width=2)
    draw.rectangle([float(v) * f for v in box], outline=(255, 230, 0), width=3)
    name = D.CLASS_NAMES[label]
    tiles = [first, *frames]
    rows = -(-len(tiles) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * TILE, rows * TILE), (0, 0, 0))
    for k, tile in enumerate(tiles):
        t = tile.convert("RGB")
        t.thumbnail((TILE, TILE), Image.LANCZOS)
        sheet.paste(t, ((k % COLUMNS) * TILE + (TILE - t.width) // 2, (k // COLUMNS) * TILE + (TILE - t.height) // 2))
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(OUT, optimize=True)
    print(f"{OUT}: {OUT.stat().st_size / 1024:.0f} KB, scene {index}, {name} {score:.2f}, {len(frames)} layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
