"""A Keras model's input layout and output: the batch in the model's layout, the
``(N, classes)`` output, the targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerscope.capture._targets import given_targets
from layerscope.capture.keras._module import keras_module as _keras
from layerscope.errors import ModelError, UsageError


def _channels_last(layer: Any) -> bool:
    fmt = getattr(layer, "data_format", None) or _keras().config.image_data_format()
    return fmt == "channels_last"


def _input_spec(model: Any) -> tuple[Any, ...] | None:
    """The model's per-image input shape, ``(H, W, C)`` with ``None`` for free sizes, if known."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    return tuple(inputs[0].shape[1:])


def model_input(model: Any, x: Any, backend: str) -> Any:
    """The batch in the model's layout: a channels-first ``(N, C, H, W)`` array (what
    :class:`~layerscope.inputs.Preprocess` makes) is transposed for a channels-last model."""
    keras = _keras()
    if hasattr(x, "detach") and backend != "torch":
        x = x.detach().cpu().numpy()
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype=np.float32)
    if len(x.shape) == 3:
        x = x[None]
    if len(x.shape) != 4:
        raise UsageError(f"a Keras image batch must be 4-D (N, H, W, C), not {tuple(x.shape)}")
    shape = tuple(int(s) for s in x.shape)
    last = keras.config.image_data_format() == "channels_last"
    c_axis, other = (3, 1) if last else (1, 3)
    spec = _input_spec(model)
    want_c = spec[-1 if last else 0] if spec else None
    if want_c is not None:
        swap = shape[c_axis] != want_c and shape[other] == want_c
    else:
        swap = shape[c_axis] not in (1, 3, 4) and shape[other] in (1, 3, 4)
    if swap:
        perm = (0, 2, 3, 1) if last else (0, 3, 1, 2)
        x = np.transpose(x, perm) if isinstance(x, np.ndarray) else keras.ops.transpose(x, perm)
        shape = tuple(int(s) for s in x.shape)
    if spec:
        want_hw = spec[:2] if last else spec[1:]
        got_hw = shape[1:3] if last else shape[2:]
        if all(w is not None for w in want_hw) and tuple(want_hw) != tuple(got_hw):
            h, w = want_hw
            raise UsageError(
                f"the model takes {h}×{w} images, not {got_hw[0]}×{got_hw[1]}: pass "
                f"preprocess=layerscope.inputs.Preprocess(size=({h}, {w})) or resize the input"
            )
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32)
    return x


def _output(out: Any) -> Any:
    if isinstance(out, dict):
        if len(out) != 1:
            raise ModelError(f"the model returns {len(out)} named outputs; expected one (N, classes) output")
        out = next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        if not out:
            raise ModelError("the model returns no output")
        out = out[0]
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2:
        raise ModelError(
            f"the model's output has shape {tuple(shape) if shape is not None else type(out).__name__}; "
            "expected (N, classes)"
        )
    return out


def _targets(outputs: np.ndarray, target: int | Sequence[int] | None) -> np.ndarray:
    n, k = outputs.shape
    t = given_targets(target, n, k)
    return outputs.argmax(axis=1).astype(np.int64) if t is None else t


def _check_classes(out: Any) -> tuple[int, int]:
    n, k = (int(s) for s in out.shape)
    if k == 0:
        raise ModelError("the model's output has 0 classes (shape (N, 0)); there is no class to explain")
    return n, k
