"""Reading and explaining one batch of items: shared by the local and the Ray engines.

:func:`prepare` runs where the items are read (a DataLoader worker, a Ray task): it decodes
and preprocesses; :func:`explain_batch` runs where the model is (the main process, a Ray
actor): one ``explain`` call per batch, then one payload dict per item for the writer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.batch.sources import Item, Source, shard_of
from layerscope.errors import LayerscopeError


@dataclass
class Prepared:
    """An item read and preprocessed (``x``: one model input with a leading axis of 1)."""

    key: str
    source: str
    content_hash: str
    x: Any = None
    rgb: np.ndarray | None = None
    label: int | None = None
    mask: np.ndarray | None = None
    error: str | None = None
    other_shard: bool = False
    seconds: float = 0.0


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)


def prepare(
    source: Source,
    item: Item,
    preprocess: Callable[[Sequence[np.ndarray]], Any],
    shard: tuple[int, int] | None = None,
    keep_image: bool = False,
    image_side: int | None = None,
) -> Prepared:
    """Read and preprocess one item; an unreadable item gives an error, never an exception.

    With ``keep_image``, the RGB picture the outputs draw over is kept at its drawn size
    (``image_side``: the render options' ``max_side``), never at full resolution, so a
    payload's memory is bounded by the drawn size whatever the file's size.
    """
    t0 = time.perf_counter()
    keep = None
    if shard is not None and shard[1] > 1:
        index, count = shard

        def keep(digest: str) -> bool:
            return shard_of(digest, count) == index

    loaded = source.load(item, keep)
    where = str(item.ref) if item.kind in ("file", "url") else item.key
    out = Prepared(item.key, where, loaded.content_hash, label=loaded.label)
    if loaded.skipped or (keep is not None and not keep(loaded.content_hash)):
        out.other_shard = True
        return out
    if loaded.error is not None:
        out.error = loaded.error
    else:
        try:
            out.x = _as_numpy(preprocess([loaded.rgb])).astype(np.float32, copy=False)
            out.mask = loaded.mask
            out.rgb = display_image(loaded.rgb, image_side) if keep_image else None
        except Exception as e:
            out.error = f"cannot preprocess the image: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    out.seconds = time.perf_counter() - t0
    return out


def display_image(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """``rgb`` shrunk to the size the frames draw it at (never enlarged): the renderer's own
    resize, so it draws the same pixels from this copy as from the full image."""
    if max_side is None:
        return rgb
    from layerscope.render.drawing import base_image, display_size

    h, w = rgb.shape[:2]
    size = display_size((h, w), max_side=max_side)
    if size[0] >= h and size[1] >= w:
        return rgb
    return base_image(rgb, size)


def _predicted_probabilities(outputs: np.ndarray, kind: str | None) -> np.ndarray:
    """Each row's class probabilities: the output itself when it already is one, else its softmax."""
    looks = bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4))
    if kind == "probabilities" or (kind is None and looks):
        return outputs
    z = outputs - outputs.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def explain_batch(
    model: Any,
    prepared: Sequence[Prepared],
    *,
    layers: Sequence[str],
    method: str,
    target: Any,
    info: Any,
    method_options: dict[str, Any],
    explain_options: dict[str, Any],
    keep_image: bool,
    image_side: int | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Explain the readable items of a batch in one ``explain`` call.

    Returns:
        One payload per item that belongs to this shard (errors included) and the seconds
        spent in ``explain``.
    """
    from layerscope.explanation import explain

    payloads: list[dict[str, Any]] = []
    if target == "label":  # a table row or a tar sample may lack its label
        for p in prepared:
            if p.error is None and p.label is None:
                p.error = "no true label for --target label"
    good = [p for p in prepared if not p.other_shard and p.error is None]
    for p in prepared:
        if p.other_shard:
            continue
        if p.error is not None:
            payloads.append(
                {"key": p.key, "source": p.source, "content_hash": p.content_hash, "label": p.label, "error": p.error}
            )
    if not good:
        return payloads, 0.0
    x = np.concatenate([p.x for p in good], axis=0)
    if target == "label":
        targets: Any = [int(p.label) for p in good]  # the run checked every item has a label
    elif target is None:
        targets = None
    else:
        targets = [target] * len(good)
    t0 = time.perf_counter()
    exp = explain(
        model, x, layers=list(layers), method=method, target=targets, info=info, **method_options, **explain_options
    )
    seconds = time.perf_counter() - t0
    outputs = np.asarray(exp.outputs, np.float64)
    probs = _predicted_probabilities(outputs, getattr(info, "output", None))
    predicted = outputs.argmax(axis=1)
    for i, p in enumerate(good):
        payloads.append(
            {
                "key": p.key,
                "source": p.source,
                "content_hash": p.content_hash,
                "label": p.label,
                "error": None,
                "mask": p.mask,
                "image": p.rgb if keep_image else None,
                "cams": {name: exp.cams[name][i] for name in exp.layers},
                "flat": {name: bool(exp.flat[name][i]) for name in exp.layers},
                "shapes": {name: tuple(int(s) for s in exp.shapes[name]) for name in exp.layers},
                "target": int(exp.targets[i]),
                "target_score": float(exp.scores[i]),
                "target_probability": float(exp.probabilities[i]),
                "predicted": int(predicted[i]),
                "predicted_probability": float(probs[i, predicted[i]]),
                "outputs": exp.outputs[i],
                "detections": None if exp.detections is None else exp.detections[i],
            }
        )
    return payloads, seconds


def explain_safely(model: Any, batch: list[Prepared], params: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """:func:`explain_batch`; when the batch fails as a whole, each item alone, so one bad
    item becomes one error row (the local and the Ray engine both call this)."""
    try:
        return explain_batch(model, batch, **params)
    except LayerscopeError as e:
        good = [p for p in batch if not p.other_shard and p.error is None]
        if len(good) <= 1:
            for p in good:
                p.error = str(e).splitlines()[0]
            return explain_batch(model, batch, **params)
    out: list[dict[str, Any]] = []
    total = 0.0
    for p in batch:
        try:
            payloads, s = explain_batch(model, [p], **params)
        except LayerscopeError as e:
            p.error = str(e).splitlines()[0]
            payloads, s = explain_batch(model, [p], **params)
        out.extend(payloads)
        total += s
    return out, total
