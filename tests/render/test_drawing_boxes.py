"""Boxes on frames: draw_boxes, and a detector's boxes on every layer's GIF frame."""

from __future__ import annotations

import numpy as np
from PIL import Image

import layerscope
from helpers_detector import TinyDetector, hand_detections, image
from layerscope.render import DrawnBox, draw_boxes
from layerscope.render.drawing import BOX_THICK, BOX_THIN
from layerscope.targets import box


def test_draw_boxes_thick_and_thin() -> None:
    rgb = np.zeros((100, 100, 3), np.uint8)
    out = draw_boxes(rgb, [DrawnBox((10, 10, 50, 50), thick=False), DrawnBox((60, 60, 90, 90), thick=True, text="cat")])
    assert rgb.max() == 0  # a new array
    assert tuple(out[30, 10]) == BOX_THIN and tuple(out[30, 11]) != BOX_THIN  # 1 px
    assert all(tuple(out[75, 60 + d]) == BOX_THICK for d in range(3))  # 3 px or more
    assert tuple(out[75, 75]) == (0, 0, 0)  # the inside untouched
    assert draw_boxes(rgb, []) is rgb
    scaled = draw_boxes(rgb, [DrawnBox((5, 5, 25, 25), thick=False)], scale=(2.0, 2.0))
    assert tuple(scaled[30, 10]) == BOX_THIN


def test_gif_frames_show_the_boxes(tmp_path) -> None:
    model = TinyDetector("torchvision").eval()
    x = image()
    b, label, _ = hand_detections(model, x)[3]
    exp = layerscope.explain(model, x, target=box(tuple(b), label=label))
    path = exp.save(tmp_path / "boxes.gif")
    gif = Image.open(path)
    assert gif.n_frames == len(exp.layers)
    drawn = exp.drawn_boxes(0)
    assert sum(d.thick for d in drawn) == 1 and len(drawn) == 7
    for k in range(gif.n_frames):
        gif.seek(k)
        frame = np.asarray(gif.convert("RGB")).astype(int)
        # the picture is 32×32 drawn at 224×224 from (20, 20): the explained box's left edge is white
        x0 = 20 + round(float(b[0]) * 7)
        column = frame[20 + round(float(b[1]) * 7) + 10 : 20 + round(float(b[3]) * 7) - 10, x0 - 3 : x0 + 5]
        white = (np.abs(column - 255).max(axis=-1) <= 24).sum(axis=1)
        assert (white >= 2).all()  # every row of the edge: a line 2 px wide or more
        magenta = (np.abs(frame - np.array(BOX_THIN)).max(axis=-1) <= 24).sum()
        assert magenta > 200  # the other five detections, thin
    assert "Box: (" in exp.caption(exp.layers[0])[1]
