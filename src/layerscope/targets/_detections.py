"""A detector's output as per-image detections, for the box targets
(:mod:`layerscope.targets.box`) and for drawing boxes.

Two formats are understood without user code:

* **torchvision-style**: a list of ``N`` dicts with ``boxes`` ``(M, 4)`` (``x0, y0, x1, y1``
  in input pixels), ``labels`` ``(M,)`` and ``scores`` ``(M,)`` — what torchvision's
  Faster R-CNN, RetinaNet, FCOS, SSD return in eval mode (already filtered and NMS'd by the
  model);
* **YOLO-style** raw tensors: ``(N, A, 4 + 1 + K)`` (YOLOv5: box, objectness, ``K`` class
  scores per anchor) or ``(N, 4 + K, A)`` (YOLOv8: box and class scores, channels first),
  decoded here (the layout told by ``objectness`` / ``layout``, else by which dimension is
  smaller): boxes ``xywh`` (centre, size) or ``xyxy``; the score of class ``k`` is
  ``objectness · class_k`` (``class_k`` alone without objectness), taken as given (apply the
  sigmoid inside the model if its head does not); each anchor's detection is its best class;
  anchors under ``conf`` are dropped and the rest go through class-aware greedy NMS.

Anything else: a callable ``(model_output) -> list of dicts`` as ``format=``.

The thresholds (``conf``, NMS) are applied without gradient; the kept detections' boxes and
scores stay in the autograd graph, so a box target's score can be differentiated through
both the classification and the box regression. Torch is imported only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from layerscope.errors import UsageError

#: The keys of one image's detections in the torchvision-style format.
DETECTION_KEYS = ("boxes", "labels", "scores")
FORMATS = ("torchvision", "yolo")
BOX_FORMATS = ("xyxy", "xywh")
LAYOUTS = (None, "anchors-first", "channels-first")


def is_detection_list(output: Any) -> bool:
    """Whether ``output`` is torchvision-style detections: a non-empty list/tuple of dicts
    with ``boxes``, ``labels`` and ``scores``."""
    return (
        isinstance(output, (list, tuple))
        and bool(output)
        and all(hasattr(d, "keys") and all(k in d.keys() for k in DETECTION_KEYS) for d in output)
    )


def box_iou(boxes: Any, box: Any) -> Any:
    """``(M,)`` intersection over union of each ``x0, y0, x1, y1`` box in ``boxes`` ``(M, 4)``
    with one box ``(4,)``: ``inter / (area_a + area_b − inter)``, the intersection's sides
    clamped at 0 (the formula of torchvision's ``box_iou``); differentiable in ``boxes``."""
    import torch

    lt = torch.maximum(boxes[:, :2], box[:2])
    rb = torch.minimum(boxes[:, 2:], box[2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_b = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area_a + area_b - inter)


def nms(boxes: Any, scores: Any, labels: Any, iou: float) -> Any:
    """Indices kept by class-aware greedy non-maximum suppression (highest score first; a
    box is dropped when it overlaps a kept box of its class by IoU > ``iou``), no gradient."""
    import torch

    with torch.no_grad():
        order = torch.argsort(scores.detach(), descending=True, stable=True)
        b, lab = boxes.detach()[order].float(), labels[order]
        keep: list[int] = []
        alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
        for i in range(len(order)):
            if not bool(alive[i]):
                continue
            keep.append(i)
            overlap = box_iou(b, b[i]) > iou
            alive &= ~(overlap & (lab == lab[i]))
        return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def parse(
    output: Any,
    format: str | Callable[[Any], Any] | None = None,
    box_format: str = "xywh",
    objectness: bool | None = None,
    conf: float = 0.25,
    nms_iou: float | None = 0.5,
    layout: str | None = None,
) -> list[dict[str, Any]]:
    """Per image, ``{"boxes": (M, 4) xyxy, "labels": (M,) long, "scores": (M,)}`` tensors
    (in the graph) and ``"any"``: a tensor of the image's output that carries its gradient
    (``0 · any`` is an image's zero score), highest score first.

    Args:
        output: the model's raw output.
        format: ``"torchvision"``, ``"yolo"``, a callable returning the torchvision-style
            list, or ``None``: torchvision-style if the output is a list of dicts, YOLO-style
            if it is a 3-D tensor.
        box_format: YOLO boxes as ``"xywh"`` (centre x, centre y, width, height) or ``"xyxy"``.
        objectness: whether a YOLO row has an objectness score after the box; ``None``: the
            ``(N, A, 4 + 1 + K)`` layout has one and the channels-first ``(N, 4 + K, A)``
            layout has none.
        conf: YOLO anchors whose best score is under ``conf`` are dropped.
        nms_iou: the IoU above which NMS drops a YOLO box (``None``: no NMS).
        layout: ``"anchors-first"`` ``(N, A, C)`` or ``"channels-first"`` ``(N, C, A)``;
            ``None``: anchors first with objectness, channels first without, and when
            ``objectness`` is not given either, the smaller of the two dimensions holds the
            ``C`` values (a real head has thousands of anchors).
    """
    import torch

    raw = output
    if callable(format):
        raw = format(output)
        if not is_detection_list(raw):
            raise UsageError("the detections callable must return a list of dicts with boxes, labels and scores")
        return [_sorted(_checked(d, i)) for i, d in enumerate(raw)]
    if format not in (None, *FORMATS):
        raise UsageError(f"unknown detection format {format!r}; expected one of {', '.join(FORMATS)} or a callable")
    if box_format not in BOX_FORMATS:
        raise UsageError(f"unknown box_format {box_format!r}; expected {' or '.join(BOX_FORMATS)}")
    if format in (None, "torchvision") and is_detection_list(raw):
        return [_sorted(_checked(d, i)) for i, d in enumerate(raw)]
    if isinstance(raw, (tuple, list)) and raw and isinstance(raw[0], torch.Tensor) and format == "yolo":
        raw = raw[0]  # YOLOv5 returns (predictions, per-level maps)
    if format in (None, "yolo") and isinstance(raw, torch.Tensor) and raw.ndim == 3:
        return _yolo(raw, box_format, objectness, conf, nms_iou, layout)
    got = f"a {tuple(raw.shape)} tensor" if isinstance(raw, torch.Tensor) else f"a {type(raw).__name__}"
    raise UsageError(
        f"the model returned {got}, not detections: expected a list of dicts with boxes, labels and scores "
        "(torchvision), a (N, A, 4+1+K) or (N, 4+K, A) tensor (format='yolo'), or give format=CALLABLE that "
        "turns the output into that list"
    )


def _checked(d: Any, i: int) -> dict[str, Any]:
    import torch

    boxes, labels, scores = (d[k] for k in DETECTION_KEYS)
    if not all(isinstance(t, torch.Tensor) for t in (boxes, labels, scores)):
        raise UsageError(f"image {i}'s detections: boxes, labels and scores must be tensors")
    m = int(scores.reshape(-1).shape[0])
    if tuple(boxes.shape) != (m, 4) or int(labels.reshape(-1).shape[0]) != m:
        raise UsageError(
            f"image {i}'s detections: boxes {tuple(boxes.shape)}, labels {tuple(labels.shape)} and scores "
            f"{tuple(scores.shape)} do not agree; expected (M, 4), (M,), (M,)"
        )
    return {"boxes": boxes, "labels": labels.reshape(-1).long(), "scores": scores.reshape(-1), "any": scores}


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    import torch

    order = torch.argsort(d["scores"].detach(), descending=True, stable=True)
    return {**{k: d[k][order] for k in DETECTION_KEYS}, "any": d["any"]}


def _yolo(
    raw: Any, box_format: str, objectness: bool | None, conf: float, nms_iou: float | None, layout: str | None
) -> list[dict[str, Any]]:
    import torch

    if layout not in LAYOUTS:
        raise UsageError(f"unknown YOLO layout {layout!r}; expected {' or '.join(map(repr, LAYOUTS[1:]))}")
    if layout is not None:
        channels_first = layout == "channels-first"
    elif objectness is not None:
        channels_first = not objectness
    else:
        channels_first = int(raw.shape[1]) < int(raw.shape[2])
    rows = raw.transpose(1, 2) if channels_first else raw  # (N, A, C)
    has_obj = (not channels_first) if objectness is None else bool(objectness)
    c = int(rows.shape[2])
    k = c - 4 - int(has_obj)
    if k < 1:
        read = "(N, 4 + K, A)" if channels_first else "(N, A, 4 + 1 + K)" if has_obj else "(N, A, 4 + K)"
        raise UsageError(
            f"a YOLO output of shape {tuple(raw.shape)} read as {read} has no class score "
            f"({c} values per anchor{', objectness included' if has_obj else ''}); check objectness= and layout="
        )
    xy, cls = rows[..., :4].float(), rows[..., 4 + int(has_obj) :].float()
    if has_obj:
        cls = cls * rows[..., 4:5].float()
    if box_format == "xywh":
        xy = torch.cat([xy[..., :2] - xy[..., 2:] / 2, xy[..., :2] + xy[..., 2:] / 2], dim=-1)
    best, labels = cls.max(dim=-1)  # (N, A)
    out = []
    for n in range(int(rows.shape[0])):
        keep = (best[n].detach() >= conf).nonzero()[:, 0]
        b, s, lab = xy[n][keep], best[n][keep], labels[n][keep]
        if nms_iou is not None and len(keep):
            kept = nms(b, s, lab, nms_iou)
            b, s, lab = b[kept], s[kept], lab[kept]
        out.append(_sorted({"boxes": b, "labels": lab, "scores": s, "any": rows[n]}))
    return out


def matches(det: dict[str, Any], box: Any, label: int | None, iou: float, best: bool = False) -> tuple[Any, Any]:
    """``(indices, ious)`` of the detections that match ``box``: IoU ≥ ``iou`` and the same
    label (any label for ``None``); ``best``: only the detection of highest IoU, if it
    matches (pytorch-grad-cam's rule)."""
    import torch

    boxes = det["boxes"]
    b = torch.as_tensor(box, dtype=torch.float32, device=boxes.device)
    ious = box_iou(boxes.float(), b)
    with torch.no_grad():
        ok = ious.detach() >= iou
        if label is not None:
            ok &= det["labels"] == int(label)
        if best and len(ious):
            top = int(ious.detach().argmax())
            ok = torch.zeros_like(ok)
            ok[top] = bool(ious[top] >= iou) and (label is None or int(det["labels"][top]) == int(label))
        idx = ok.nonzero()[:, 0]
    return idx, ious[idx]


def as_record(det: dict[str, Any], size: tuple[int, int] | None) -> dict[str, Any]:
    """One image's detections as host arrays (for drawing and storing): ``boxes`` float32
    ``(M, 4)``, ``labels`` int64, ``scores`` float32, ``size`` the input's ``(H, W)``."""
    return {
        "boxes": det["boxes"].detach().float().cpu().numpy().reshape(-1, 4),
        "labels": det["labels"].detach().cpu().numpy().astype(np.int64),
        "scores": det["scores"].detach().float().cpu().numpy(),
        "size": size,
    }


def class_table(parsed: Sequence[dict[str, Any]]) -> Any:
    """``(N, K)``: each label's best detection score per image (0 where none), ``K`` one
    more than the largest label, in the graph: a detector's output as per-class scores (a
    class target explains the best detection of that class)."""
    import torch

    k = max([int(d["labels"].max()) + 1 for d in parsed if len(d["labels"])] + [1])
    device = parsed[0]["scores"].device
    rows = []
    for d in parsed:
        row = torch.zeros(k, device=device) + d["any"].float().sum() * 0.0
        if len(d["labels"]):
            row = row.scatter_reduce(0, d["labels"], d["scores"].float(), reduce="amax", include_self=True)
        rows.append(row)
    return torch.stack(rows)


def box_text(box: Sequence[float]) -> str:
    """``(x0,y0,x1,y1)`` rounded to whole pixels."""
    return "(" + ",".join(str(round(float(v))) for v in box) + ")"
