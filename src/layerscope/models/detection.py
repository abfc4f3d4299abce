"""Box helpers for detectors, in plain torch (no torchvision): IoU, greedy NMS, and the mean
average precision at an IoU threshold (PASCAL VOC's all-point interpolated AP, per class).

Boxes are ``(K, 4)`` ``x0, y0, x1, y1`` (torchvision's ``xyxy``), in pixels. The functions
that run on detections take torchvision's output format: one ``dict(boxes, labels,
scores)`` per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

#: The IoU at which a detection matches a ground-truth box (PASCAL VOC's).
MATCH_IOU = 0.5


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(K,)`` areas of ``(K, 4)`` xyxy boxes (0 for an empty or inverted box)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(A, B)`` intersection over union of two sets of xyxy boxes (0 where both are empty)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float = MATCH_IOU) -> torch.Tensor:
    """Greedy non-maximum suppression: the indices of the boxes kept, by decreasing score
    (a box is dropped when it overlaps a kept, higher-scoring one by more than ``iou``), as
    ``torchvision.ops.nms``. Only the order of the (detached) scores is used."""
    order = torch.argsort(scores.detach(), descending=True, stable=True)
    overlaps = box_iou(boxes.detach(), boxes.detach())
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i].cpu() > iou
    return torch.as_tensor(keep, dtype=torch.long, device=boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float = MATCH_IOU
) -> torch.Tensor:
    """:func:`nms` within each label (boxes of different labels never suppress each other),
    the kept indices by decreasing score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each label's boxes apart so that boxes of two labels never overlap (torchvision's trick).
    shift = labels.to(boxes.dtype)[:, None] * (boxes.detach().max() + 1.0)
    return nms(boxes.detach() + shift, scores, iou)


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision/recall curve, precision made monotone from the right (VOC
    2010+ all-point interpolation)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _numpy(v: Any) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def mean_average_precision(
    detections: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[tuple[Any, Any]],
    iou: float = MATCH_IOU,
    num_classes: int | None = None,
) -> tuple[float, dict[int, float]]:
    """Mean average precision at one IoU threshold (mAP@0.5 by default), PASCAL VOC style.

    Per class, the detections of every image are ranked by score; each is a true positive
    when its best-overlapping ground-truth box of that class (IoU ≥ ``iou``) is not yet
    matched by a higher-scoring detection, else a false positive. AP is the area under the
    interpolated precision/recall curve (:func:`_average_precision`); the mean is over the
    classes that have ground-truth boxes (a class with none is left out; its detections
    then count nowhere).

    Args:
        detections: per image, ``dict(boxes (K, 4) xyxy, labels (K,), scores (K,))``
            (tensors or arrays).
        ground_truth: per image, ``(boxes (G, 4) xyxy, labels (G,))``.
        iou: the IoU a match needs.
        num_classes: the classes to consider (default: those seen in the ground truth).

    Returns:
        ``(mAP, {class: AP})``; mAP is 0.0 when there is no ground-truth box at all.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truth)} of ground truth")
    gts = [
        (_numpy(b).reshape(-1, 4).astype(np.float64), _numpy(lab).reshape(-1).astype(np.int64))
        for b, lab in ground_truth
    ]
    classes = sorted({int(c) for _, lab in gts for c in lab})
    if num_classes is not None:
        classes = [c for c in classes if c < num_classes]
    per_class: dict[int, float] = {}
    for c in classes:
        n_gt = sum(int((lab == c).sum()) for _, lab in gts)
        found: list[tuple[float, bool]] = []
        for det, (gb, gl) in zip(detections, gts, strict=True):
            labels = _numpy(det["labels"]).reshape(-1)
            keep = labels == c
            boxes = _numpy(det["boxes"]).reshape(-1, 4)[keep].astype(np.float64)
            scores = _numpy(det["scores"]).reshape(-1)[keep].astype(np.float64)
            truth = gb[gl == c]
            taken = np.zeros(len(truth), dtype=bool)
            overlaps = box_iou(torch.from_numpy(boxes), torch.from_numpy(truth)).numpy() if len(truth) else None
            for k in np.argsort(-scores, kind="stable"):
                hit = False
                if overlaps is not None:
                    j = int(np.argmax(overlaps[k]))
                    if overlaps[k, j] >= iou and not taken[j]:
                        taken[j] = hit = True
                found.append((float(scores[k]), hit))
        found.sort(key=lambda t: -t[0])  # stable: ties keep image order
        tp = np.cumsum([h for _, h in found], dtype=np.float64)
        fp = np.cumsum([not h for _, h in found], dtype=np.float64)
        recall = tp / max(n_gt, 1)
        precision = tp / np.maximum(tp + fp, 1e-12)
        per_class[c] = _average_precision(recall, precision) if found else 0.0
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return mean, per_class
