"""The detector targets: :func:`box` (explain one detected box) and :func:`detections`
(explain each of the top-``k`` detections in turn).

The score of image ``n`` for a box ``b`` (label ``l`` or any) is

    S = Σ_{d ∈ M} (score_d + IoU(box_d, b)),   M = {d : IoU(box_d, b) ≥ iou, label_d = l}

over the image's detections ``d`` (see :mod:`layerscope.targets._detections` for the
formats): the classification evidence and the box regression's agreement with ``b``, as
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``. Its gradient flows through both the class
scores and the predicted box coordinates. pytorch-grad-cam keeps only the detection of
highest IoU (if it passes the threshold, strictly, with the same label); ``match="best"``
gives that rule, the default ``match="all"`` sums every matching detection (a raw
detector's duplicates of one object included).

The protocol the torch capture honours (besides a callable's ``(output) -> (N,)``):
``detections_of(output)`` parses the output once; ``scored(parsed)`` gives the ``(N,)``
scores, ``outputs_of(parsed)`` the ``(N, K)`` confidences shown (one column per explained
box; ``output_kind = "probabilities"``: a detection's score is its probability) and
``records(parsed, size)`` the host arrays drawn on the frames. Torch is imported only when a
target is called.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.targets._detections import as_record, box_text, matches, parse

MATCHES = ("all", "best")


class _BoxTarget:
    """What :class:`Box` and :class:`Detections` share: parsing, the score, the records."""

    kind = "box"
    name = "box"
    output_kind = "probabilities"

    def __init__(
        self,
        iou: float,
        match: str,
        format: str | Callable[[Any], Any] | None,
        box_format: str,
        objectness: bool | None,
        conf: float,
        nms_iou: float | None,
        layout: str | None = None,
    ) -> None:
        if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0.0 < float(iou) <= 1.0:
            raise UsageError(f"{self.name}(iou={iou!r}): give an IoU threshold in (0, 1]")
        if match not in MATCHES:
            raise UsageError(f"{self.name}(match={match!r}): expected one of {', '.join(MATCHES)}")
        if not (callable(format) or format in (None, "torchvision", "yolo")):
            raise UsageError(f"{self.name}(format={format!r}): expected 'torchvision', 'yolo' or a callable")
        if box_format not in ("xyxy", "xywh"):
            raise UsageError(f"{self.name}(box_format={box_format!r}): expected 'xywh' or 'xyxy'")
        self.iou, self.match = float(iou), match
        self.parse_options = {
            "format": format,
            "box_format": box_format,
            "objectness": objectness,
            "conf": float(conf),
            "nms_iou": nms_iou,
            "layout": layout,
        }
        self.labels: list[str] = []

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_index(self) -> int | list[int]:
        """Column 0 for every image (one box), else column ``n`` for image ``n``."""
        return 0 if len(self.labels) == 1 else list(range(len(self.labels)))

    def detections_of(self, output: Any) -> list[dict[str, Any]]:
        """The output's detections per image (:func:`~layerscope.targets._detections.parse`)."""
        parsed = parse(output, **self.parse_options)
        k, n = len(self.labels), len(parsed)
        if k > 1 and k != n:
            raise UsageError(
                f"{k} {'boxes' if self.name == 'box' else 'detections'} for {n} image{'s' if n != 1 else ''}: "
                f"give one, one per image, or explain_many(model, image, targets={self.name}(...)) for one "
                "explanation each"
            )
        return parsed

    def explained(self, parsed: Sequence[dict[str, Any]]) -> list[tuple[Any, int | None] | None]:
        """Per image, the ``(box, label)`` it explains (``None``: nothing to explain)."""
        raise NotImplementedError

    def scored(self, parsed: Sequence[dict[str, Any]]) -> Any:
        """``(N,)`` scores ``Σ_{d ∈ M} (score_d + IoU(box_d, b))``; 0 (flat maps, a warning)
        for an image with no matching detection."""
        import torch

        out = []
        for n, (det, chosen) in enumerate(zip(parsed, self.explained(parsed), strict=True)):
            idx, ious = matches(det, chosen[0], chosen[1], self.iou, self.match == "best") if chosen else ([], None)
            if len(idx):
                out.append((det["scores"][idx].float() + ious.float()).sum())
                continue
            out.append(det["any"].float().sum() * 0.0)  # a zero that keeps the graph: flat maps
            what = (
                f"no detection matches box {box_text(chosen[0])}"
                + (f" with label {chosen[1]}" if chosen[1] is not None else "")
                + f" (IoU ≥ {self.iou:g})"
                if chosen
                else "there is no such detection"
            )
            warnings.warn(f"image {n}: {what}; its maps are flat (score 0)", stacklevel=2)
        return torch.stack(out)

    def outputs_of(self, parsed: Sequence[dict[str, Any]]) -> Any:
        """``(N, K)`` shown confidences: column ``j``, the best matching detection's score
        for explained box ``j`` (0 where none matches)."""
        raise NotImplementedError

    def records(self, parsed: Sequence[dict[str, Any]], size: tuple[int, int] | None) -> list[dict[str, Any]]:
        """Per image, its detections as host arrays (:func:`as_record`) and ``explained``:
        ``{"box", "label", "score", "matched"}`` (the box; its label, or for any label the best
        matching detection's; that detection's score; how many detections match) or ``None``."""
        out = []
        for det, chosen in zip(parsed, self.explained(parsed), strict=True):
            rec = as_record(det, size)
            rec["explained"] = None
            if chosen is not None:
                idx, _ = matches(det, chosen[0], chosen[1], self.iou, self.match == "best")
                label, best = chosen[1], 0.0
                if len(idx):
                    top = idx[int(det["scores"][idx].detach().argmax())]
                    best = float(det["scores"][top].detach())
                    label = int(det["labels"][top]) if label is None else label  # any label: the best match's
                box = [float(v) for v in np.asarray(_host(chosen[0]), dtype=np.float64).reshape(4)]
                rec["explained"] = {"box": box, "label": label, "score": best, "matched": len(idx)}
            out.append(rec)
        return out

    def __call__(self, output: Any) -> Any:
        """``(N,)`` scores of the model's raw output."""
        return self.scored(self.detections_of(output))

    def _best(self, det: dict[str, Any], box: Any, label: int | None) -> float:
        idx, _ = matches(det, box, label, self.iou, self.match == "best")
        return float(det["scores"][idx].detach().max()) if len(idx) else 0.0


class Box(_BoxTarget):
    """The score of one given box, or of box ``n`` for image ``n`` (see :func:`box`).

    Attributes:
        boxes: ``(K, 4)`` the boxes, ``x0, y0, x1, y1`` in input pixels.
        box_labels: each box's label (``None``: any).
        labels: each box as text (``Explanation.class_names``).
    """

    name = "box"

    def __init__(self, box: Any, label: Any = None, iou: float = 0.5, **options: Any) -> None:
        super().__init__(iou, **options)
        try:
            b = np.asarray(_host(box), dtype=np.float64)
        except (TypeError, ValueError):
            raise UsageError(f"box(): give a box as (x0, y0, x1, y1), or (K, 4) boxes, not {box!r}") from None
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
            raise UsageError(f"box(): give a box as (x0, y0, x1, y1), or (K, 4) boxes, not shape {b.shape}")
        if not np.isfinite(b).all() or (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
            raise UsageError("box(): a box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0, in input pixels")
        labels = list(label) if isinstance(label, (list, tuple, np.ndarray)) else [label] * len(b)
        if len(labels) != len(b):
            raise UsageError(f"box(): {len(labels)} labels for {len(b)} boxes")
        for lab in labels:
            if lab is not None and (isinstance(lab, (bool, np.bool_)) or not isinstance(lab, (int, np.integer))):
                raise UsageError(f"box(label={lab!r}): a label is the detector's class index (a whole number)")
        self.boxes = b
        self.box_labels = [None if lab is None else int(lab) for lab in labels]
        self.labels = [box_text(x) + ("" if lab is None else f" label {lab}") for x, lab in zip(b, labels, strict=True)]

    def explained(self, parsed: Sequence[dict[str, Any]]) -> list[tuple[Any, int | None] | None]:
        k = len(self.boxes)
        return [(self.boxes[n if k > 1 else 0], self.box_labels[n if k > 1 else 0]) for n in range(len(parsed))]

    def outputs_of(self, parsed: Sequence[dict[str, Any]]) -> Any:
        import torch

        rows = [[self._best(d, b, lab) for b, lab in zip(self.boxes, self.box_labels, strict=True)] for d in parsed]
        return torch.tensor(rows, dtype=torch.float32, device=parsed[0]["scores"].device)

    def __repr__(self) -> str:
        return f"box({', '.join(self.labels[:3])}{', …' if len(self.labels) > 3 else ''})"


class Detections(_BoxTarget):
    """The top-``k`` detections, image ``n`` explaining detection ``n`` (see :func:`detections`)."""

    name = "detections"

    def __init__(self, k: int = 3, iou: float = 0.5, **options: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UsageError(f"detections(k={k!r}): give how many detections to explain, 1 or more")
        super().__init__(iou, **options)
        self.k = int(k)
        self.labels = [f"detection {i + 1}" for i in range(self.k)]

    def explained(self, parsed: Sequence[dict[str, Any]]) -> list[tuple[Any, int | None] | None]:
        out: list[tuple[Any, int | None] | None] = []
        for n, det in enumerate(parsed):
            rank = n if self.k > 1 else 0
            ok = rank < len(det["scores"])
            out.append((det["boxes"][rank].detach().float(), int(det["labels"][rank])) if ok else None)
        return out

    def outputs_of(self, parsed: Sequence[dict[str, Any]]) -> Any:
        import torch

        out = torch.zeros(len(parsed), self.k, device=parsed[0]["scores"].device)
        for n, det in enumerate(parsed):
            m = min(self.k, len(det["scores"]))
            out[n, :m] = det["scores"][:m].detach().float()
        return out

    def records(self, parsed: Sequence[dict[str, Any]], size: tuple[int, int] | None) -> list[dict[str, Any]]:
        recs = super().records(parsed, size)
        det = recs[0]
        for j in range(min(self.k, len(det["scores"]))):  # the labels name image 0's top detections
            self.labels[j] = f"{box_text(det['boxes'][j])} label {int(det['labels'][j])}"
        return recs

    def __repr__(self) -> str:
        return f"detections(k={self.k})"


def box(
    box: Any,
    label: int | Sequence[int] | None = None,
    iou: float = 0.5,
    *,
    match: str = "all",
    format: str | Callable[[Any], Any] | None = None,
    box_format: str = "xywh",
    objectness: bool | None = None,
    conf: float = 0.25,
    nms_iou: float | None = 0.5,
    layout: str | None = None,
) -> Box:
    """A detector target: the model's evidence for one box, at every layer.

    The explained score is the sum, over the detections that match the box (IoU ≥ ``iou``
    and, when ``label`` is given, the same label), of each one's class score plus its IoU
    with the box, ``Σ_d (score_d + IoU(box_d, box))`` — pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget`` (which keeps only the best-IoU detection: ``match="best"``)::

        from layerscope.targets import box, detections

        exp = layerscope.explain(detector, "street.jpg", target=box((48, 30, 210, 180), label=3))
        exps = layerscope.explain_many(detector, "street.jpg", targets=detections(3))

    A box that no detection matches gets a zero score and flat maps with a warning, not an
    error: in a batch, or among several boxes, one image without the object should not lose
    the others' maps (as :func:`~layerscope.targets.region` does for an empty region).

    Args:
        box: ``(x0, y0, x1, y1)`` in the model input's pixels, or ``(K, 4)`` boxes, one per
            image (or one per copy of the image with :func:`~layerscope.explain_many`).
        label: the detector's class index of the box (one, or one per box); ``None``: any.
        iou: the IoU a detection needs with the box to match.
        match: ``"all"`` matching detections summed, or ``"best"``: only the highest-IoU one.
        format: the output's format: ``None`` (detected: a list of dicts is torchvision's,
            a 3-D tensor YOLO's), ``"torchvision"``, ``"yolo"``, or a callable from the
            model's output to a torchvision-style list of dicts.
        box_format: YOLO boxes as ``"xywh"`` (centre and size) or ``"xyxy"``.
        objectness: whether YOLO rows hold an objectness score after the box; it also tells
            the layout: ``True`` ``(N, A, 4 + 1 + K)`` (YOLOv5), ``False`` ``(N, 4 + K, A)``
            (YOLOv8); ``None``: the smaller dimension holds the values, and only the
            ``(N, A, …)`` layout has objectness.
        conf: YOLO anchors with a best score under ``conf`` are not detections.
        nms_iou: YOLO detections overlapping a better one of their class by more are
            dropped (``None``: no NMS).
        layout: the YOLO layout when ``objectness`` does not tell it: ``"anchors-first"``
            or ``"channels-first"``.

    Returns:
        The target for ``explain(..., target=...)`` (PyTorch; gradient methods, and Eigen-CAM
        to draw the boxes): ``Explanation.detections`` holds each image's detections and the
        explained box; captions read ``Box: (x0,y0,x1,y1) label p = …``.
    """
    options = dict(match=match, format=format, box_format=box_format, objectness=objectness, conf=conf, layout=layout)
    return Box(box, label, iou, nms_iou=nms_iou, **options)


def detections(
    k: int = 3,
    iou: float = 0.5,
    *,
    match: str = "all",
    format: str | Callable[[Any], Any] | None = None,
    box_format: str = "xywh",
    objectness: bool | None = None,
    conf: float = 0.25,
    nms_iou: float | None = 0.5,
    layout: str | None = None,
) -> Detections:
    """The top-``k`` detections of an image, each explained in turn as :func:`box` explains
    one (its box and label, matched against the same output).

    ``explain_many(model, image, targets=detections(3))`` repeats the image ``k`` times and
    explains detection ``i`` with copy ``i``: ``k`` explanations from one forward and one
    backward pass. With :func:`~layerscope.explain`, ``k=1`` explains each image's top
    detection. A detection rank the image does not have gives flat maps with a warning
    (``explain_many`` leaves it out). The options are :func:`box`'s.
    """
    options = dict(match=match, format=format, box_format=box_format, objectness=objectness, conf=conf, layout=layout)
    return Detections(k, iou, nms_iou=nms_iou, **options)


def _host(a: Any) -> Any:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return a
