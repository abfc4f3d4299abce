"""Capture adapters: run a model once and hand each chosen layer's activation and gradient
to a callback.

Every adapter module exposes the same two functions:

``resolve_layers(model, layers) -> list[tuple[str, str]]``
    ``(display name, framework path)`` pairs for the requested layers (``None`` = every
    conv layer; names, glob patterns, or a list of them). Unknown names raise
    :class:`~layerscope.errors.UsageError` listing close matches.

``run(model, x, layers, target, layer_fn, need_gradients=True) -> CaptureResult``
    One forward pass, then (if ``need_gradients``) one backward pass of the target scores
    with respect to the captured activations only. ``layer_fn(A, G)`` gets channels-first
    ``(N, C, h, w)`` framework tensors (``G`` is ``None`` without gradients) as soon as a
    layer's gradient is known and returns its ``(N, h, w)`` map.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from layerscope.errors import UsageError


@dataclass
class CaptureResult:
    """What one capture run returns. ``layers`` are display names in forward order."""

    layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    cams: dict[str, np.ndarray]
    outputs: np.ndarray
    targets: np.ndarray
    nonfinite: list[str] = field(default_factory=list)


def detect_framework(model: Any) -> str:
    """``"torch"`` or ``"keras"``, from the model's class, without importing either."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("keras", "tf_keras"):
            return "keras"
    raise UsageError(f"cannot explain a {type(model).__name__}: expected a torch.nn.Module or a keras.Model")


def get_adapter(framework: str) -> ModuleType:
    """The adapter module for ``framework`` (imported only now)."""
    if framework == "torch":
        from layerscope.capture import torch as adapter
    elif framework == "keras":
        from layerscope.capture import keras as adapter
    else:
        raise UsageError(f"unknown framework {framework!r}; expected 'torch' or 'keras'")
    return adapter


def framework_loaded(name: str) -> bool:
    """Whether a framework is already imported (adapters never import the other one)."""
    return name in sys.modules


def match_layers(
    specs: str | list[str] | tuple[str, ...] | None,
    names: dict[str, str],
    default: list[str],
) -> list[tuple[str, str]]:
    """Resolve layer specs against the known names; shared by the adapters.

    Args:
        specs: ``None`` (the default layers), one name or glob pattern, a comma-separated
            string of them, or a list.
        names: every addressable name (friendly names first) → framework path.
        default: the display names chosen when ``specs`` is ``None``.

    Returns:
        ``(display name, path)`` pairs, without duplicates, in the order found.
    """
    import difflib
    import fnmatch

    if specs is None:
        return [(n, names[n]) for n in default]
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    if not specs:
        raise UsageError("no layer given: pass layer names, glob patterns, or nothing for every conv layer")
    chosen: dict[str, str] = {}
    for spec in specs:
        if spec in names:
            found = [spec]
        elif any(ch in spec for ch in "*?["):
            found = fnmatch.filter(names, spec)
            if not found:
                raise UsageError(f"layer pattern {spec!r} matches no layer")
        else:
            close = difflib.get_close_matches(spec, names, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UsageError(f"unknown layer {spec!r}{hint} (list them with `layerscope layers`)")
        for n in found:
            chosen.setdefault(n, names[n])
    return list(chosen.items())


def given_targets(target: int | Sequence[int] | None, n: int, k: int) -> np.ndarray | None:
    """The explicit targets as ``(n,)`` class indices (one given for all is repeated), or
    ``None`` for "top-1". Raises :class:`~layerscope.errors.UsageError` for a wrong count or
    an index outside ``[0, k)``."""
    if target is None:
        return None
    t = np.asarray(target, dtype=np.int64).reshape(-1)
    if t.size == 1:
        t = np.repeat(t, n)
    if t.size != n:
        raise UsageError(f"{t.size} targets for {n} images; give one per image or one for all")
    bad = t[(t < 0) | (t >= k)]
    if bad.size:
        raise UsageError(f"class index {int(bad[0])} is out of range for a model with {k} classes")
    return t
