"""COCO-style ground-truth boxes: read, converted to xyxy, and every malformed entry refused
with an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from layerscope.datasets.coco import load_coco_boxes
from layerscope.errors import UsageError

GOOD = {
    "images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 32}, {"id": 9, "file_name": "b.png"}],
    "annotations": [
        {"image_id": 7, "bbox": [1, 2, 10, 20], "category_id": 3, "iscrowd": 0},
        {"image_id": 7, "bbox": [30.5, 4, 5, 6], "category_id": 1},
    ],
    "categories": [{"id": 1, "name": "Square"}, {"id": 3, "name": "star"}],
}


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_reads_boxes_as_xyxy_and_maps_names_to_classes(tmp_path: Path) -> None:
    coco = load_coco_boxes(_write(tmp_path, GOOD))
    assert coco.files == ["a.png", "b.png"]
    np.testing.assert_array_equal(coco.boxes[0], [[1, 2, 11, 22], [30.5, 4, 35.5, 10]])
    assert coco.boxes[1].shape == (0, 4)
    assert coco.categories[0].tolist() == [3, 1] and coco.names == {1: "Square", 3: "star"}
    names = ("circle", "square", "triangle", "star")
    assert [c.tolist() for c in coco.class_indices(names)] == [[3, 1], []]
    with pytest.raises(UsageError, match=r"category 'star'.*model's classes"):
        coco.class_indices(("circle", "square"))
    without = {**GOOD, "categories": []}
    assert load_coco_boxes(_write(tmp_path, without)).class_indices(names)[0].tolist() == [3, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("{", "not valid JSON"),
        ([], 'an object with an "images" list'),
        ({"images": []}, '"annotations" list'),
        ({**GOOD, "images": [{"id": "7", "file_name": "a.png"}]}, r"images\[0\] needs an integer"),
        ({**GOOD, "images": [{"id": 7, "file_name": "a"}, {"id": 7, "file_name": "b"}]}, "appears twice"),
        ({**GOOD, "annotations": [{"image_id": 8, "bbox": [0, 0, 1, 1], "category_id": 1}]}, "image_id 8 is not"),
        ({**GOOD, "annotations": [{"image_id": 7, "bbox": [0, 0, 1], "category_id": 1}]}, "four finite numbers"),
        ({**GOOD, "annotations": [{"image_id": 7, "bbox": [0, 0, 0, 1], "category_id": 1}]}, "not positive"),
        ({**GOOD, "annotations": [{"image_id": 7, "bbox": [0, 0, 1, 1], "category_id": 2}]}, "category_id 2 is not"),
        ({**GOOD, "annotations": [{"image_id": 7, "bbox": [0, 0, 1, 1]}]}, 'integer "category_id"'),
        ({**GOOD, "categories": [{"id": 1}]}, r"categories\[0\] needs"),
        ({**GOOD, "annotations": [3]}, r"annotations\[0\] is not an object"),
    ],
)
def test_malformed_files_are_refused_naming_the_entry(tmp_path: Path, change: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_coco_boxes(_write(tmp_path, change))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such annotations file"):
        load_coco_boxes(tmp_path / "nope.json")
