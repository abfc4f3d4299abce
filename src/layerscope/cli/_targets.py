"""The detector ``--target`` specs, checked before anything is loaded:
``box:x0,y0,x1,y1[:label]`` and ``top-detections:K``."""

from __future__ import annotations

import math
from typing import Any

from layerscope.errors import UsageError

BOX = "box:"
TOP = "top-detections:"
SPECS = "box:x0,y0,x1,y1[:label] or top-detections:K"


def is_detector_spec(spec: str | None) -> bool:
    """Whether ``--target`` names a box or the top detections (not a class)."""
    return bool(spec) and str(spec).strip().lower().startswith((BOX, TOP))


def detector_target(spec: str | None) -> Any:
    """The :func:`~layerscope.targets.box` / :func:`~layerscope.targets.detections` target a
    ``--target`` spec names (``None`` for a class), or a :class:`UsageError` for a malformed
    one: four finite numbers with ``x1 > x0`` and ``y1 > y0``, a whole-number label, ``K ≥ 1``."""
    from layerscope.targets import box, detections

    if not is_detector_spec(spec):
        return None
    text = str(spec).strip()
    if text.lower().startswith(TOP):
        k = text[len(TOP) :].strip()
        if not k.isdigit() or int(k) < 1:
            raise UsageError(f"--target {text!r}: give how many detections to explain, e.g. top-detections:3")
        return detections(int(k))
    body = text[len(BOX) :]
    coords, _, label = body.partition(":")
    parts = [p.strip() for p in coords.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(parts) != 4 or len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise UsageError(
            f"--target {text!r}: a box is four numbers x0,y0,x1,y1 in the model input's pixels, e.g. "
            "box:40,30,200,180 or box:40,30,200,180:3 (with the detector's label)"
        )
    lab = label.strip()
    if label and not lab.isdigit():
        raise UsageError(f"--target {text!r}: the label after the box is the detector's class index, e.g. :3")
    return box(values, label=int(lab) if lab else None)
