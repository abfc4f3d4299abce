"""Per-layer metrics for a detector's boxes: the pointing game and the energy in the box for
each ground-truth object's detection, and deletion/insertion on that detection's score.

What is explained is one *item*: an image with one ground-truth box and its class. The
score explained (and measured by deletion/insertion) comes from a *target*, a callable of
the model's output giving one score per item, as :func:`layerscope.explain` takes it; the
default, :class:`MatchedDetection`, is the score of the detection that matches the box. The
metrics only see maps and boxes, so another definition of a box's score (e.g. a sum over
several detections) plugs in through ``target=`` and ``scorer=`` unchanged.

Boxes are ``(N, 4)`` ``x0, y0, x1, y1`` in pixels of the model input; a pixel is inside a
box when its centre is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.evaluate.deletion import baseline_pair, deletion_insertion, deletion_insertion_passes
from layerscope.evaluate.localisation import energy_pointing_game, pointing_game
from layerscope.evaluate.result import Evaluation, Plan

#: The metrics of a box evaluation, and the columns each gives.
BOX_METRICS: dict[str, tuple[str, ...]] = {
    "pointing": ("pointing_game",),
    "energy": ("energy_pointing_game",),
    "deletion": ("deletion_auc",),
    "insertion": ("insertion_auc",),
}
#: The IoU at which a detection is the ground-truth box's (PASCAL VOC's).
MATCH_IOU = 0.5


def masks_from_boxes(boxes: Any, size: tuple[int, int]) -> np.ndarray:
    """Filled boxes as bool ``(N, H, W)`` masks: pixel ``(r, c)`` is inside when its centre
    ``(c + ½, r + ½)`` lies in ``[x0, x1) × [y0, y1)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = int(size[0]), int(size[1])
    cy, cx = np.arange(h) + 0.5, np.arange(w) + 0.5
    rows = (cy[None, :] >= b[:, 1:2]) & (cy[None, :] < b[:, 3:4])
    cols = (cx[None, :] >= b[:, 0:1]) & (cx[None, :] < b[:, 2:3])
    return rows[:, :, None] & cols[:, None, :]


def box_pointing_game(cams: np.ndarray, boxes: Any, size: tuple[int, int]) -> np.ndarray:
    """:func:`~layerscope.evaluate.pointing_game` with the box as the object: does each map's
    maximum (enlarged to ``size``) fall inside its box? bool ``(N,)``."""
    return pointing_game(cams, masks_from_boxes(boxes, size))


def box_energy(cams: np.ndarray, boxes: Any, size: tuple[int, int]) -> np.ndarray:
    """:func:`~layerscope.evaluate.energy_pointing_game` in the box (Score-CAM's measure):
    the share of each map's energy inside its box, float64 ``(N,)``."""
    return energy_pointing_game(cams, masks_from_boxes(boxes, size), region="mask")


# --------------------------------------------------------------------------- the default score


def _iou(box: Any, boxes: Any) -> Any:
    import torch

    lt = torch.maximum(boxes[:, :2], box[:2])
    rb = torch.minimum(boxes[:, 2:], box[2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    union = area + (box[2:] - box[:2]).clamp(min=0).prod() - inter
    return inter / union.clamp(min=1e-12)


def match(detection: dict[str, Any], box: Any, label: int, iou: float = MATCH_IOU, nearest: bool = False) -> int:
    """The index of ``box``'s detection in one image's ``dict(boxes, labels, scores)``: among
    the detections of class ``label``, the one overlapping ``box`` most, if by at least
    ``iou``; with ``nearest``, failing that, the one whose centre is nearest the box's. -1
    when there is none."""
    import torch

    boxes = detection["boxes"].detach().float()
    same = torch.nonzero(detection["labels"].reshape(-1) == int(label)).reshape(-1)
    if same.numel() == 0:
        return -1
    b = torch.as_tensor(box, dtype=boxes.dtype, device=boxes.device)
    overlaps = _iou(b, boxes[same])
    k = int(torch.argmax(overlaps))
    if float(overlaps[k]) >= iou and float(overlaps[k]) > 0:
        return int(same[k])
    if not nearest:
        return -1
    centres = (boxes[same, :2] + boxes[same, 2:]) / 2
    return int(same[int(torch.argmin(((centres - (b[:2] + b[2:]) / 2) ** 2).sum(dim=1)))])


class MatchedDetection:
    """A callable target: for item ``i``, the score of the detection matching box ``i`` of
    class ``i`` (:func:`match`; 0 when none does, so its maps are flat).

    Args:
        boxes: ``(N, 4)`` xyxy boxes in input pixels, one per image of the batch.
        classes: ``(N,)`` their class indices.
        iou: the overlap a match needs.
        nearest: without a match, take the nearest detection of the class (for the random
            model's baseline, whose boxes are arbitrary).

    After a call, :attr:`chosen` holds each item's detection index (-1: none).
    """

    kind = "detection"

    def __init__(self, boxes: Any, classes: Any, iou: float = MATCH_IOU, nearest: bool = False) -> None:
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.classes):
            raise UsageError(f"{len(self.boxes)} boxes but {len(self.classes)} classes")
        self.iou, self.nearest = iou, nearest
        self.chosen = np.full(len(self.boxes), -1)

    def __call__(self, detections: Sequence[dict[str, Any]]) -> Any:
        return self.scores(detections, np.arange(len(detections)))

    def scores(self, detections: Sequence[dict[str, Any]], items: Any) -> Any:
        """The scores of ``detections[b]`` for item ``items[b]``, ``(B,)``, in the graph."""
        import torch

        items = np.asarray(items.detach().cpu() if hasattr(items, "detach") else items).reshape(-1)
        if len(detections) != len(items):
            raise UsageError(f"{len(detections)} images of detections for {len(items)} boxes")
        out = []
        for d, i in zip(detections, items, strict=True):
            k = match(d, self.boxes[i], int(self.classes[i]), self.iou, self.nearest)
            self.chosen[i] = k
            s = d["scores"].reshape(-1)
            out.append(s[k].float() if k >= 0 else s.float().sum() * 0.0)
        return torch.stack(out) if out else torch.zeros(0)


def detection_scorer(target: MatchedDetection) -> Callable[[Any, Any], Any]:
    """A deletion/insertion ``scorer`` from a target: the score of item ``index[b]`` in the
    perturbed input ``b``'s detections (a detection that no longer matches scores 0)."""
    return lambda out, index: target.scores(out, index)


# --------------------------------------------------------------------------- the suite


def box_items(model: Any, x: Any, annotations: Sequence[tuple[Any, Any]], iou: float = MATCH_IOU) -> tuple[Any, ...]:
    """The items of a batch: each ground-truth box the model detects (a detection of its
    class with IoU ≥ ``iou``), as ``(image index (M,), boxes (M, 4), classes (M,), missed)``.

    ``x``: the preprocessed ``(N, C, H, W)`` batch; ``annotations``: per image
    ``(boxes (G, 4) xyxy in input pixels, classes (G,))``.
    """
    import torch

    with torch.no_grad():
        dets = model(torch.as_tensor(x).to(_device(model)))
    index, boxes, classes, missed = [], [], [], 0
    for i, (b, c) in enumerate(annotations):
        for box, cls in zip(np.asarray(b, dtype=np.float32).reshape(-1, 4), np.asarray(c).reshape(-1), strict=True):
            if match(dets[i], box, int(cls), iou) >= 0:
                index.append(i), boxes.append(box), classes.append(int(cls))
            else:
                missed += 1
    return np.asarray(index, dtype=np.int64), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes), missed


def _device(model: Any) -> Any:
    from layerscope.evaluate._engine import model_device

    return model_device(model)


def evaluate_boxes(
    model: Any,
    batches: Iterable[tuple[Any, Sequence[tuple[Any, Any]]]],
    methods: str | Sequence[str] = "gradcam",
    metrics: str | Sequence[str] = ("pointing", "energy", "deletion", "insertion"),
    layers: str | Sequence[str] | None = None,
    *,
    target: Callable[..., Any] = MatchedDetection,
    random_baseline: bool = True,
    steps: int = 20,
    baseline: str | Sequence[str] = ("zero", "blur"),
    perturb_batch: int = 256,
    seed: int = 0,
    info: Any = None,
    method_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Evaluation, int]:
    """Every chosen box metric at every layer, for each method: one capture (forward +
    backward) per batch of items and method, and the same for the fully randomised model
    (:func:`~layerscope.evaluate.sanity.randomised_model`) as a baseline.

    Args:
        model: a torch detector returning torchvision-style detections.
        batches: ``(x, annotations)``: a preprocessed ``(N, C, H, W)`` batch and, per image,
            ``(boxes (G, 4) xyxy in input pixels, classes (G,))``. Each box the trained model
            detects (:func:`box_items`) is one item; its image is explained for it.
        methods, layers, info, method_options: as :func:`layerscope.evaluate.evaluate`.
        metrics: names from :data:`BOX_METRICS`.
        target: ``target(boxes, classes, nearest=...)`` → the callable target of a batch of
            items (default :class:`MatchedDetection`); it must offer ``scores(detections,
            items)`` for deletion/insertion. The random model's target is built with
            ``nearest=True``.
        random_baseline: also score the random model's maps (on the trained model).
        steps, baseline, perturb_batch: deletion/insertion's options.
        seed: the randomisation's seed.
        progress: a tqdm bar over the batches.

    Returns:
        ``(evaluation, missed)``: an :class:`~layerscope.evaluate.Evaluation` whose images
        are the items, and the number of ground-truth boxes the model did not detect.
    """
    import torch

    from layerscope.evaluate import sanity
    from layerscope.explanation import explain
    from layerscope.info import info_for

    chosen = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    for m in chosen:
        if m not in BOX_METRICS:
            raise UsageError(f"metric {m!r} is not a box metric; box metrics: {', '.join(BOX_METRICS)}")
    method_list = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if not method_list:
        raise UsageError("no method given")
    if not isinstance(model, torch.nn.Module):
        raise UsageError("box metrics need a PyTorch detector (torch.nn.Module)")
    facts = info_for(model, info)
    b_del, b_ins = baseline_pair(baseline)
    random_model = sanity.randomised_model(model, seed) if random_baseline else None
    values: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
    names: list[str] | None = None
    n_items = missed = 0
    passes = {"capture": 0, "deletion/insertion": 0, "matching": 0}
    stream: Iterable[Any] = batches
    if progress:
        from tqdm.auto import tqdm

        stream = tqdm(batches, desc="evaluate boxes", unit="batch")
    dev = _device(model)
    for x, anns in stream:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dev)
        index, boxes, classes, miss = box_items(model, x, anns)
        passes["matching"] += int(x.shape[0])
        missed += miss
        if len(index) == 0:
            continue
        xi = x[torch.as_tensor(index, device=dev)]
        size = (int(xi.shape[-2]), int(xi.shape[-1]))
        n_items += len(index)
        for method in method_list:
            kinds = [("trained", model, target(boxes, classes))]
            if random_model is not None:
                kinds.append(("random", random_model, target(boxes, classes, nearest=True)))
            for kind, net, tgt in kinds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exp = explain(net, xi, layers, method, tgt, info=facts, **(method_options or {}))
                passes["capture"] += len(index)
                names = names or list(exp.layers)
                maps = [exp.cams[layer] for layer in names]
                cols: dict[str, list[np.ndarray]] = {}
                if "pointing" in chosen:
                    cols["pointing_game"] = [box_pointing_game(m, boxes, size).astype(np.float64) for m in maps]
                if "energy" in chosen:
                    cols["energy_pointing_game"] = [box_energy(m, boxes, size) for m in maps]
                if "deletion" in chosen or "insertion" in chosen:
                    fresh = target(boxes, classes)  # its own record of matches
                    di = deletion_insertion(
                        model, xi, maps, np.zeros(len(index), dtype=np.int64), steps=steps, baseline=(b_del, b_ins),
                        perturb_batch=perturb_batch, scorer=detection_scorer(fresh),
                    )  # fmt: skip
                    passes["deletion/insertion"] += deletion_insertion_passes(
                        len(index), len(maps), size[0] * size[1], steps, b_del == b_ins
                    )
                    if "deletion" in chosen:
                        cols["deletion_auc"] = list(di.deletion)
                    if "insertion" in chosen:
                        cols["insertion_auc"] = list(di.insertion)
                for col, per_layer in cols.items():
                    for layer, v in zip(names, per_layer, strict=True):
                        values.setdefault((kind, method, layer, col), []).append(np.asarray(v, dtype=np.float64))
    if names is None:
        raise UsageError(f"the model detects none of the {missed} ground-truth boxes; nothing to explain")
    columns = [c for m in BOX_METRICS if m in chosen for c in BOX_METRICS[m]]
    plan = Plan(n_items, len(names), len(method_list), {k: v for k, v in passes.items() if v})
    merged = {k: np.concatenate(v) for k, v in values.items()}
    return Evaluation(names, method_list, columns, merged, {}, n_items, plan), missed
