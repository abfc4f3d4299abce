"""The framework-neutral end of a capture run: each layer's map made as soon as its
activation (and gradient) is known (:class:`Maps`), the one device→host transfer of a
batch (:func:`host_transfer`), and the check that the model's output is finite
(:func:`check_outputs_finite`).

An adapter hands :class:`Maps` its framework's pieces (an :class:`ArrayOps` for the
transfer, the float32 cast, a guard such as ``torch.no_grad``); nothing here imports a
framework, and nothing here synchronises with the device before the one transfer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from layerscope.capture._request import CaptureResult
from layerscope.errors import ModelError


def check_outputs_finite(outputs: np.ndarray) -> None:
    """NaN or inf in the model's *output* is an error (in activations it is a warning)."""
    bad = ~np.isfinite(outputs).all(axis=tuple(range(1, outputs.ndim)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(
            f"the model's output is NaN or inf for image {i} ({int(bad.sum())} of {len(bad)} images): "
            "check the weights and the input (a model that outputs NaN cannot be explained)"
        )


class ArrayOps(Protocol):
    """What :func:`host_transfer` needs from a framework's arrays."""

    def f32(self, t: Any) -> Any: ...  # the array in float32
    def all_finite(self, t: Any) -> Any: ...  # a 0-d float32 1.0 / 0.0, on the device
    def zeroed_flat(self, t: Any) -> Any: ...  # 1-D, NaN/inf set to 0
    def stack(self, flags: list[Any]) -> Any: ...  # 1-D float32
    def flat(self, t: Any) -> Any: ...  # 1-D float32
    def cat(self, pieces: list[Any]) -> Any: ...
    def to_numpy(self, buf: Any) -> np.ndarray: ...  # the one copy to the host
    def shape(self, t: Any) -> tuple[int, ...]: ...


class NumpyOps:
    """:class:`ArrayOps` for host arrays (maps computed with numpy)."""

    def f32(self, t: Any) -> np.ndarray:
        return np.asarray(t, dtype=np.float32)

    def all_finite(self, t: Any) -> np.ndarray:
        return np.asarray(np.isfinite(t).all(), dtype=np.float32)

    def zeroed_flat(self, t: Any) -> np.ndarray:
        return np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).reshape(-1)

    def stack(self, flags: list[Any]) -> np.ndarray:
        return np.stack(flags).astype(np.float32)

    def flat(self, t: Any) -> np.ndarray:
        return np.asarray(t, dtype=np.float32).reshape(-1)

    def cat(self, pieces: list[Any]) -> np.ndarray:
        return np.concatenate(pieces)

    def to_numpy(self, buf: Any) -> np.ndarray:
        return np.asarray(buf)

    def shape(self, t: Any) -> tuple[int, ...]:
        return tuple(int(s) for s in np.shape(t))


def host_transfer(
    maps: dict[str, Any], outputs: Any, targets: Any, ops: ArrayOps
) -> tuple[dict[str, np.ndarray], list[str], np.ndarray, np.ndarray]:
    """The one device→host transfer of a batch.

    On the device: each map's "all finite" flag, NaN/inf set to 0, everything (maps, flags,
    outputs, targets) flattened into one float32 buffer. Then one copy to the host, split
    back into numpy arrays.

    Returns:
        ``(maps, names of maps that had NaN/inf, outputs float32, targets (N,) int64)``.
    """
    names = list(maps)
    parts = [ops.f32(maps[n]) for n in names]
    shapes = [ops.shape(p) for p in parts]
    pieces = [ops.zeroed_flat(p) for p in parts]
    if parts:
        pieces.append(ops.stack([ops.all_finite(p) for p in parts]))
    out_shape = ops.shape(outputs)
    pieces.append(ops.flat(outputs))
    pieces.append(ops.flat(targets))
    flat = ops.to_numpy(ops.cat(pieces) if len(pieces) > 1 else pieces[0])
    cams: dict[str, np.ndarray] = {}
    at = 0
    for n, shape in zip(names, shapes, strict=True):
        size = int(np.prod(shape, dtype=np.int64))
        cams[n] = flat[at : at + size].reshape(shape).copy()
        at += size
    ok = flat[at : at + len(names)]
    at += len(names)
    nonfinite = [n for n, good in zip(names, ok, strict=True) if not good]
    k = int(np.prod(out_shape, dtype=np.int64))
    out = flat[at : at + k].reshape(out_shape).copy()
    at += k
    return cams, nonfinite, out, flat[at:].astype(np.int64)


_FLAG = "\x00cut\x00"  # the key prefix of a layer's cut-off flag inside the one transfer


def _same(t: Any) -> Any:
    return t


class Maps:
    """The one maps collector: ``keep(name, A, G)`` makes the layer's map at once (on the
    device) and :meth:`finish` moves every map to the host in one transfer.

    Args:
        fn: ``fn(A, G, **context) -> (N, h, w)``.
        ops: the framework's :class:`ArrayOps`, or ``choose(maps, outputs) -> ops`` called
            when the run finishes (for adapters whose arrays depend on the backend).
        context: keyword arguments handed to ``fn`` (``probe=``, ``saliency=``).
        layouts: ``{layer: callable}`` laying a layer's output out as ``(N, C, h, w)``
            (applied alike to ``A`` and ``G``); one whose ``identity`` is true is skipped,
            one with a ``note`` gives the caption's grid description.
        prepare: applied to ``A`` first (``Tensor.detach``).
        fp32: the float32 cast of a lower-precision float (CAM math runs in float32).
        guard: a context manager factory the map is made under (``torch.no_grad``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        ops: ArrayOps | Callable[[dict[str, Any], Any], ArrayOps],
        *,
        context: dict[str, Any] | None = None,
        layouts: dict[str, Any] | None = None,
        prepare: Callable[[Any], Any] = _same,
        fp32: Callable[[Any], Any] = _same,
        guard: Callable[[], Any] = contextlib.nullcontext,
    ) -> None:
        self.fn, self.ops = fn, ops
        self.context = context or {}
        self.layouts = layouts if layouts is not None else {}
        self.prepare, self.fp32, self.guard = prepare, fp32, guard
        self.maps: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        #: ``{layer: why}`` for layers the explained score does not depend on (their
        #: gradient is zero, so their map is flat for that reason): ``"output"`` (backward
        #: never reached the layer) or ``"patch tokens"`` (it reached only the class token)
        self.blocked: dict[str, str] = {}
        self._cut: dict[str, Any] = {}  # {layer: a 0-d device flag}, moved with the maps

    def keep(self, name: str, act: Any, grad: Any, **extra: Any) -> None:
        """Make layer ``name``'s map from its activation and gradient (``None`` for
        gradient-free methods); ``extra`` are per-layer arrays shaped like ``act`` handed to
        ``fn`` by keyword (``hvp=``), laid out alike."""
        with self.guard():
            act = self.prepare(act)
            self.shapes[name] = tuple(int(s) for s in act.shape[1:])
            lay = self.layouts.get(name)
            if lay is not None and not getattr(lay, "identity", False):
                cut = getattr(lay, "cut_off", None)
                if cut is not None and grad is not None and name not in self.blocked:
                    flag = cut(grad)
                    if flag is not None:
                        self._cut[name] = flag
                act, grad = lay(act), (None if grad is None else lay(grad))
                extra = {k: lay(v) for k, v in extra.items()}
            extra = {k: self.fp32(v) for k, v in extra.items()}
            self.maps[name] = self.fn(self.fp32(act), self.fp32(grad), **self.context, **extra)

    def finish(
        self,
        order: list[str],
        outputs: Any,
        targets: Any,
        *,
        shapes: dict[str, tuple[int, ...]] | None = None,
        scores: Any = None,
        join: Callable[[Any, Any], Any] | None = None,
    ) -> CaptureResult:
        """One transfer of every map, the outputs and the targets to the host; NaN/inf in a
        map is set to 0 and reported, in the outputs it is an error.

        ``scores``: a callable target's ``(N,)`` scores, carried as one more output column
        (``join(outputs, scores)`` makes it) and split off again on the host.
        """
        maps = {n: self.maps.pop(n) for n in order}
        both = outputs if scores is None or join is None else join(outputs, scores)
        ops = self.ops if hasattr(self.ops, "to_numpy") else self.ops(maps, both)  # type: ignore[operator]
        flags = {_FLAG + n: self._cut.pop(n) for n in order if n in self._cut}  # in the same transfer
        cams, nonfinite, out, tgt = host_transfer({**maps, **flags}, both, targets, ops)  # type: ignore[arg-type]
        for key in flags:
            if float(cams.pop(key).reshape(-1)[0]) > 0:
                self.blocked.setdefault(key[len(_FLAG) :], "patch tokens")
        nonfinite = [n for n in nonfinite if not n.startswith(_FLAG)]
        custom = None
        if scores is not None and join is not None:
            out, custom = np.ascontiguousarray(out[:, :-1]), out[:, -1].copy()
        check_outputs_finite(out)
        grids = {n: lay.note for n in order if (lay := self.layouts.get(n)) is not None and getattr(lay, "note", "")}
        return CaptureResult(
            layers=order,
            shapes=dict(shapes) if shapes is not None else {n: self.shapes[n] for n in order},
            cams=cams,
            outputs=out,
            targets=tgt,
            nonfinite=nonfinite,
            grids=grids,
            scores=custom,
            blocked={n: self.blocked[n] for n in order if n in self.blocked},
        )
