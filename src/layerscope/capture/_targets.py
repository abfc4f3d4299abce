"""Explicit class targets checked and repeated to one per image; shared by the adapters."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerscope.errors import UsageError


def given_targets(target: Any, n: int, k: int) -> np.ndarray | None:
    """The explicit targets as ``(n,)`` class indices (one given for all is repeated), or
    ``None`` for "top-1".

    Each target must be a whole number in ``[0, k)``: a bool, a fraction (``1.7``), a
    number too large for any model (``2**70``) or anything else raises
    :class:`~layerscope.errors.UsageError` naming it, as do a wrong count and ``k == 0``.
    """
    if target is None:
        return None
    if k <= 0:
        raise UsageError("the model's output has 0 classes; there is no class to explain")
    if hasattr(target, "detach"):  # a torch tensor
        target = target.detach().cpu().numpy()
    items = list(np.asarray(target, dtype=object).reshape(-1)) if np.ndim(target) else [target]
    out = [_class_index(t, k) for t in items]
    if len(out) == 1:
        out = out * n
    if len(out) != n:
        raise UsageError(f"{len(out)} targets for {n} images; give one per image or one for all")
    return np.asarray(out, dtype=np.int64)


def _class_index(t: Any, k: int) -> int:
    """One target as a class index in ``[0, k)``, or a clear error."""
    if hasattr(t, "detach") and getattr(t, "ndim", None) == 0:  # a 0-d torch tensor
        t = t.detach().cpu().numpy()[()]
    if isinstance(t, (bool, np.bool_)):
        raise UsageError(f"target {t!r} is a bool; give a class index (a whole number) or a class name")
    if isinstance(t, (int, np.integer)):
        i = int(t)
    elif isinstance(t, (float, np.floating)):
        if not np.isfinite(t) or float(t) != int(t):
            raise UsageError(f"target {t!r} is not a whole number; give a class index or a class name")
        i = int(t)
    elif isinstance(t, str) and t.strip().lstrip("-").isdigit():
        i = int(t)
    else:
        raise UsageError(f"target {t!r} ({type(t).__name__}) is not a class index; give a whole number or a class name")
    if not 0 <= i < k:
        raise UsageError(f"class index {i} is out of range for a model with {k} classes (0 to {k - 1})")
    return i
