"""Box helpers in plain torch: IoU, NMS, and mAP@0.5 against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerscope.models.detection import _average_precision, batched_nms, box_iou, mean_average_precision, nms


def test_box_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    np.testing.assert_allclose(box_iou(a, b).numpy(), [[1.0, 50 / 150, 0.0, 0.0]], atol=1e-7)


def test_nms_keeps_the_best_of_each_cluster_and_each_label() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # 0 and 3 overlap 1 by > 0.5
    labels = torch.tensor([0, 0, 0, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [1, 2, 3]  # 3 is another label
    assert batched_nms(boxes[:0], scores[:0], labels[:0]).tolist() == []


def test_average_precision_interpolates_from_the_right() -> None:
    # precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3: 1/3 · 1 + 1/3 · 2/3 = 5/9
    ap = _average_precision(np.array([1, 1, 2, 2]) / 3, np.array([1, 1 / 2, 2 / 3, 1 / 2]))
    assert ap == pytest.approx(5 / 9)


def test_map50_against_a_hand_computation() -> None:
    truth = [
        (np.array([[0, 0, 10, 10], [40, 40, 50, 50]]), np.array([0, 1])),
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0])),
    ]
    dets = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [42, 40, 52, 50], [60, 60, 70, 70]]),
            "labels": torch.tensor([0, 0, 1, 2]),
            "scores": torch.tensor([0.9, 0.8, 0.5, 0.99]),
        },
        {
            "boxes": torch.tensor([[20.0, 20, 30, 30], [50, 50, 60, 60]]),
            "labels": torch.tensor([0, 0]),
            "scores": torch.tensor([0.7, 0.6]),
        },
    ]
    # Class 0: ranked 0.9 TP, 0.8 FP (its box already taken), 0.7 TP, 0.6 FP; 3 boxes:
    # AP = 5/9 (above). The ground-truth box (0,0,10,10) of image 1 is never found.
    # Class 1: one detection, IoU 80/120 ≥ 0.5: AP 1. Class 2 has no ground truth: left out.
    value, per_class = mean_average_precision(dets, truth)
    assert per_class == pytest.approx({0: 5 / 9, 1: 1.0})
    assert value == pytest.approx(7 / 9)
    # Moved to IoU 50/150 < 0.5, the class-1 detection is a false positive: AP 0.
    dets[0]["boxes"][2] = torch.tensor([45.0, 40, 55, 50])
    value, per_class = mean_average_precision(dets, truth)
    assert per_class[1] == 0.0 and value == pytest.approx(5 / 18)
    assert mean_average_precision([], []) == (0.0, {})
    with pytest.raises(ValueError):
        mean_average_precision(dets, truth[:1])
