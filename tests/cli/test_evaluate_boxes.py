"""``layerscope evaluate --scenes N | --boxes JSON``: a detector's box metrics per layer, the
ground truth from the scenes or from a COCO-style file (the same numbers for the same
images), and every bad argument refused before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import run_cli

from layerscope.datasets.scenes import make_scenes
from layerscope.datasets.shapes import CLASS_NAMES
from layerscope.models import demo_detector

CHEAP = ("--model", "demo-detector", "--methods", "gradcam", "--layers", "neck,heat_conv", "--no-progress",
         "--metrics", "pointing,energy", "--no-random-baseline")  # fmt: skip


def _rows(path: Path) -> dict[tuple[str, str], float]:
    with path.open() as f:
        return {(r["layer"], r["metric"]): float(r["value"]) for r in csv.DictReader(f) if r["model"] == "trained"}


def _coco(tmp_path: Path, n: int, scale: int = 1) -> Path:
    images, annotations, _ = make_scenes(n, demo_detector.EVAL_SEED)
    data: dict = {"images": [], "annotations": [], "categories": []}
    data["categories"] = [{"id": 100 + i, "name": c.upper()} for i, c in enumerate(CLASS_NAMES)]
    for i, (im, (boxes, labels)) in enumerate(zip(images, annotations, strict=True)):
        pic = Image.fromarray(im)
        if scale != 1:
            pic = pic.resize((im.shape[1] * scale, im.shape[0] * 2 * scale), Image.NEAREST)
        pic.save(tmp_path / f"s{i}.png")
        data["images"].append({"id": i, "file_name": f"s{i}.png"})
        sy = 2 * scale if scale != 1 else 1
        for (x0, y0, x1, y1), c in zip(boxes.tolist(), labels.tolist(), strict=True):
            bbox = [x0 * scale, y0 * sy, (x1 - x0) * scale, (y1 - y0) * sy]
            data["annotations"].append({"image_id": i, "bbox": bbox, "category_id": 100 + c})
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_scenes_and_the_same_boxes_from_a_coco_file_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "evaluate", "--scenes", "3", *CHEAP, "-o", str(tmp_path / "a.csv"))
    assert code == 0, err
    assert "3 fresh scenes:" in out and "detected box" in out and "Pointing game" in out
    ann = _coco(tmp_path, 3)
    code, out, err = run_cli(capsys, "evaluate", "--boxes", str(ann), *CHEAP, "-o", str(tmp_path / "b.csv"))
    assert code == 0, err
    assert "3 annotated images" in out
    a, b = _rows(tmp_path / "a.csv"), _rows(tmp_path / "b.csv")
    assert a.keys() == b.keys() and len(a) == 4
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


def test_boxes_are_scaled_to_the_model_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Images stored at 2× width and 4× height: the boxes come back to the 128×128 input.
    ann = _coco(tmp_path, 2, scale=2)
    assert Image.open(tmp_path / "s0.png").size == (256, 512)
    out = str(tmp_path / "c.csv")
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path), "--boxes", str(ann), *CHEAP, "-o", out)
    assert code == 0, err
    rows = _rows(tmp_path / "c.csv")
    assert rows[("heat_conv", "pointing_game")] >= 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenes", "2", "--shapes", "2"), "--shapes gives a classifier's"),
        (("--scenes", "2", "--boxes", "x.json"), "not both"),
        (("--scenes", "2", "--metrics", "road"), "'road' is not a box metric"),
        (("--boxes", "missing.json"), "no such annotations file"),
        (("--scenes", "5", "--max-images", "2"), "more than --max-images"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--model", "demo-detector", *args, "-o", str(tmp_path / "e.csv"))
    assert code == 2 and message in err, err
    assert not list(tmp_path.iterdir())


def test_a_missing_image_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = _coco(tmp_path, 2)
    (tmp_path / "s1.png").unlink()
    code, _, err = run_cli(capsys, "evaluate", "--boxes", str(ann), *CHEAP, "-o", str(tmp_path / "e.csv"))
    assert code == 2 and "s1.png: an image of" in err, err


def test_unknown_category_names_list_the_models_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = _coco(tmp_path, 1)
    data = json.loads(ann.read_text())
    data["categories"][0]["name"] = "circel"
    ann.write_text(json.dumps(data))
    code, _, err = run_cli(capsys, "evaluate", "--boxes", str(ann), *CHEAP, "-o", str(tmp_path / "e.csv"))
    assert code == 2 and "circel" in err and "circle" in err, err
    assert np.all([not p.name.startswith("e.") for p in tmp_path.iterdir()])
