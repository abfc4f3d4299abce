"""The multi-object shapes scenes (issue 21 item 2): seeded and deterministic, boxes tight
around their masks, masks disjoint, 1–4 objects; the single-object set unchanged by the
drawing code they now share."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from layerscope.datasets.scenes import MAX_OBJECTS, iter_scenes, make_scene, make_scenes, mask_box
from layerscope.datasets.shapes import CLASS_NAMES, make_dataset


def test_a_scene_depends_only_on_seed_index_and_size() -> None:
    a = make_scene(4, 17)
    make_scene(4, 3)  # others in between change nothing
    b = make_scene(4, 17)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])
    np.testing.assert_array_equal(a[2], b[2])
    images, annotations, masks = make_scenes(5, 4, start=15)
    np.testing.assert_array_equal(images[2], a[0])
    np.testing.assert_array_equal(annotations[2][0], a[1][0])
    np.testing.assert_array_equal(masks[2], a[2])
    assert not np.array_equal(make_scene(5, 17)[0], a[0])
    parts = list(iter_scenes(5, 4, batch=2, start=15))
    assert [len(p[1]) for p in parts] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)


def test_boxes_are_tight_around_disjoint_masks() -> None:
    images, annotations, masks = make_scenes(120, seed=9)
    assert images.shape == (120, 128, 128, 3) and images.dtype == np.uint8
    counts = []
    for (boxes, labels), m in zip(annotations, masks, strict=True):
        k = len(labels)
        counts.append(k)
        assert boxes.shape == (k, 4) and boxes.dtype == np.float32 and labels.dtype == np.int64
        assert m.shape == (k, 128, 128) and m.dtype == bool
        assert np.all((labels >= 0) & (labels < len(CLASS_NAMES)))
        assert m.sum(axis=0).max() <= 1  # disjoint
        for box, mask in zip(boxes, m, strict=True):
            assert mask.sum() >= 30
            x0, y0, x1, y1 = box.astype(int)
            np.testing.assert_array_equal(box, mask_box(mask))
            assert mask[y0:y1, x0:x1].sum() == mask.sum()  # the whole mask is inside
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()  # and touches every side
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
        for i in range(k):  # boxes never overlap
            for j in range(i):
                a, b = boxes[i], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert set(counts) == set(range(1, MAX_OBJECTS + 1))


def test_mask_box_and_errors() -> None:
    m = np.zeros((8, 8), dtype=bool)
    m[2:5, 3] = True
    np.testing.assert_array_equal(mask_box(m), [3, 2, 4, 5])
    with pytest.raises(ValueError):
        mask_box(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError):
        make_scene(0, 0, size=32)
    with pytest.raises(ValueError):
        make_scene(-1, 0)


def test_single_object_samples_are_unchanged_by_the_shared_drawing_code() -> None:
    digest = hashlib.sha256()
    for size in (64, 96):
        for a in make_dataset(40, 3, size):
            digest.update(a.tobytes())
    assert digest.hexdigest() == "567670fb59bcf2d7172421670cdfc376547ca32400915a749720743978edf98d"
