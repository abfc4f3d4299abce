"""Raw maps: a compressed ``.npz`` with every map at its layer's own resolution, and a JSON
manifest entry saying what they are.

Keys: ``cam/<layer>`` (float32 ``(N, h, w)``), ``layers``, ``targets``, ``scores``,
``probabilities``, ``flat/<layer>`` and ``manifest`` (a JSON string: layers and their output
shapes, targets and class names, method and options, the model's name and note, image
sizes, the layerscope, numpy and framework versions); with a map fused across layers
(``Explanation.fused``) also ``fused`` (float32 ``(N, H, W)``) and ``fused_flat``, and the
manifest's ``fusion`` (its name, layers and options; ``null`` without one). Read it back with
:func:`read_manifest`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from layerscope._version import versions
from layerscope.atomic import atomic_file
from layerscope.outputs._registry import register
from layerscope.outputs.base import Writer
from layerscope.render.options import RenderOptions

#: Bumped when the manifest's fields change meaning.
MANIFEST_VERSION = 1


def manifest(exp: Any, indices: list[int]) -> dict[str, Any]:
    """The manifest of images ``indices`` of an explanation (JSON-ready)."""
    names = exp.class_names
    targets = [int(exp.targets[i]) for i in indices]
    info = getattr(exp, "info", None)
    return {
        "manifest_version": MANIFEST_VERSION,
        "layers": list(exp.layers),
        "shapes": {k: [int(s) for s in exp.shapes[k]] for k in exp.layers},
        "map_shapes": {k: [int(s) for s in exp.cams[k].shape[1:]] for k in exp.layers},
        "method": exp.method,
        "method_options": {k: _jsonable(v) for k, v in (exp.options or {}).items()},
        "fusion": _fusion(exp),
        "targets": targets,
        "target_names": [names[t] if names and 0 <= t < len(names) else None for t in targets],
        "probabilities": [float(exp.probabilities[i]) for i in indices],
        "class_names": list(names) if names else None,
        "image_sizes": [list(exp.images[i].shape[:2]) for i in indices] if exp.images else None,
        "model": getattr(info, "name", None),
        "note": getattr(info, "note", None),
        "warning": getattr(info, "warning", None),
        "versions": versions(),
    }


def _fusion(exp: Any) -> dict[str, Any] | None:
    f = getattr(exp, "fusion", None)
    if f is None:
        return None
    return {
        "method": f.method,
        "layers": list(f.layers),
        "options": {k: _jsonable(v) for k, v in f.options.items()},
        "map_shape": [int(s) for s in f.map.shape[1:]],
    }


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], overwrite: bool = False) -> Path:
    """Save named arrays as a compressed ``.npz``, atomically."""
    with atomic_file(path, overwrite) as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def _npz(exp: Any, path: Path, options: RenderOptions, index: int | None, overwrite: bool) -> Path:
    idx = list(range(len(exp.targets))) if index is None else [index]
    arrays: dict[str, np.ndarray] = {f"cam/{k}": np.asarray(exp.cams[k])[idx] for k in exp.layers}
    arrays.update({f"flat/{k}": np.asarray(exp.flat[k])[idx] for k in exp.layers})
    if getattr(exp, "fusion", None) is not None:
        arrays.update(fused=np.asarray(exp.fusion.map)[idx], fused_flat=np.asarray(exp.fusion.flat)[idx])
    arrays.update(
        layers=np.asarray(exp.layers),
        targets=np.asarray(exp.targets)[idx],
        scores=np.asarray(exp.scores)[idx],
        probabilities=np.asarray(exp.probabilities)[idx],
        manifest=np.asarray(json.dumps(manifest(exp, idx), sort_keys=True)),
    )
    return write_npz(path, arrays, overwrite)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a ``.npz`` written by layerscope."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["manifest"]))


NPZ = register(".npz", Writer("raw maps (.npz with a JSON manifest)", _npz, per_image=False, draws_frames=False))
