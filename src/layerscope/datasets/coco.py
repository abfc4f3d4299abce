"""Ground-truth boxes from a COCO-style annotations file, checked with clear errors.

The subset of the COCO format read here::

    {"images": [{"id": 1, "file_name": "a.png"}, ...],
     "annotations": [{"image_id": 1, "bbox": [x, y, width, height], "category_id": 3}, ...],
     "categories": [{"id": 3, "name": "star"}, ...]}

``bbox`` is COCO's ``[x, y, width, height]`` in the image's pixels; it is returned as
``x0, y0, x1, y1``. ``categories`` is optional: without it a ``category_id`` is a class index.
Other keys (``width``, ``height``, ``iscrowd``, ``area``, ``segmentation`` …) are ignored.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError, unknown_name

#: The largest annotations file read (a COCO ``instances_val2017.json`` is 25 MB).
MAX_BYTES = 256 * 2**20


@dataclass
class CocoBoxes:
    """The boxes of a COCO-style file.

    Attributes:
        files: each annotated image's ``file_name``, in the file's order.
        boxes: per image, float32 ``(G, 4)`` ``x0, y0, x1, y1`` in its pixels.
        categories: per image, ``(G,)`` the boxes' ``category_id``.
        names: ``{category_id: name}`` (empty without ``categories``).
    """

    files: list[str]
    boxes: list[np.ndarray]
    categories: list[np.ndarray]
    names: dict[int, str]

    def class_indices(self, class_names: Any) -> list[np.ndarray]:
        """Each box's class index in ``class_names``: by category name (case-insensitive)
        when the file names its categories, else the ``category_id`` itself."""
        if not self.names:
            return [c.astype(np.int64) for c in self.categories]
        if not class_names:
            raise UsageError("the annotations name their categories, but the model has no class names")
        lower = {str(n).lower(): i for i, n in enumerate(class_names)}
        index: dict[int, int] = {}
        for cid, name in self.names.items():
            if name.lower() not in lower:
                raise UsageError(unknown_name("category", name, list(class_names), valid="the model's classes"))
            index[cid] = lower[name.lower()]
        return [np.asarray([index[int(c)] for c in cats], dtype=np.int64) for cats in self.categories]


def _where(path: Path, what: str) -> str:
    return f"{path}: {what}"


def load_coco_boxes(path: str | os.PathLike[str]) -> CocoBoxes:
    """Read and check a COCO-style annotations file (see the module's docstring).

    Raises:
        UsageError: a missing, oversized or non-JSON file, or one whose structure is wrong
            (each error names the entry and what is wrong with it).
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(_where(p, "no such annotations file"))
    if p.stat().st_size > MAX_BYTES:
        raise UsageError(_where(p, f"larger than {MAX_BYTES // 2**20} MiB; not an annotations file?"))
    try:
        data = json.loads(p.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(_where(p, f"not valid JSON ({e})")) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UsageError(_where(p, 'not COCO-style: expected an object with an "images" list'))
    if not isinstance(data.get("annotations"), list):
        raise UsageError(_where(p, 'not COCO-style: expected an "annotations" list'))
    names: dict[int, str] = {}
    for k, c in enumerate(data.get("categories") or []):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise UsageError(_where(p, f'categories[{k}] needs an integer "id" and a string "name"'))
        names[int(c["id"])] = c["name"]
    files: list[str] = []
    order: dict[int, int] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_int(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise UsageError(_where(p, f'images[{k}] needs an integer "id" and a string "file_name"'))
        if int(im["id"]) in order:
            raise UsageError(_where(p, f"images[{k}]: image id {im['id']} appears twice"))
        order[int(im["id"])] = len(files)
        files.append(im["file_name"])
    boxes: list[list[list[float]]] = [[] for _ in files]
    cats: list[list[int]] = [[] for _ in files]
    for k, a in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(a, dict):
            raise UsageError(_where(p, f"{where} is not an object"))
        if not _is_int(a.get("image_id")) or int(a["image_id"]) not in order:
            raise UsageError(_where(p, f"{where}: image_id {a.get('image_id')!r} is not among the images' ids"))
        if not _is_int(a.get("category_id")):
            raise UsageError(_where(p, f'{where} needs an integer "category_id"'))
        if names and int(a["category_id"]) not in names:
            raise UsageError(_where(p, f"{where}: category_id {a['category_id']} is not among the categories"))
        if not names and int(a["category_id"]) < 0:
            raise UsageError(_where(p, f"{where}: category_id {a['category_id']} is negative"))
        b = a.get("bbox")
        if (
            not isinstance(b, list)
            or len(b) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)
        ):
            raise UsageError(_where(p, f'{where}: "bbox" must be four finite numbers [x, y, width, height]'))
        if b[2] <= 0 or b[3] <= 0:
            raise UsageError(_where(p, f"{where}: bbox {b} has a width or height that is not positive"))
        i = order[int(a["image_id"])]
        boxes[i].append([b[0], b[1], b[0] + b[2], b[1] + b[3]])
        cats[i].append(int(a["category_id"]))
    return CocoBoxes(
        files,
        [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes],
        [np.asarray(c, dtype=np.int64) for c in cats],
        names,
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
