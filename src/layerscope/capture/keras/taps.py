"""A Keras model's layers: every layer reached by a walk through nested models, their names
and the default layers, and the *taps* that keep each chosen layer's output for a run."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from layerscope.capture._layers import MAX_EXTRA_TOKENS, match_layers, token_grid
from layerscope.capture.keras._module import keras_module as _keras
from layerscope.errors import ModelError, UsageError
from layerscope.info import ModelInfo

_MISSING = object()


def _children(layer: Any) -> list[Any]:
    """The direct sub-layers of a model or layer, in forward order where Keras knows it."""
    keras = _keras()
    if isinstance(layer, keras.Model):
        try:
            kids = list(layer.layers)
        except (AttributeError, ValueError):
            kids = []
    else:
        kids = list(getattr(layer, "_layers", None) or [])
    return [k for k in kids if isinstance(k, keras.layers.Layer) and not isinstance(k, keras.layers.InputLayer)]


def walk(model: Any) -> list[tuple[str, Any]]:
    """Every layer of ``model``, nested models' layers included: ``(path, layer)`` pairs.

    ``path`` joins the layer names with ``/`` (``vgg16/block1_conv1``); a layer used twice
    appears once.
    """
    out: list[tuple[str, Any]] = []
    seen = {id(model)}

    def visit(layer: Any, prefix: str) -> None:
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            out.append((path, child))
            visit(child, path)

    visit(model, "")
    return out


def is_conv(layer: Any) -> bool:
    """A 2-D convolution: ``Conv2D``, ``DepthwiseConv2D`` or ``SeparableConv2D``."""
    kl = _keras().layers
    return isinstance(layer, (kl.Conv2D, kl.DepthwiseConv2D, kl.SeparableConv2D))


def _display(model: Any) -> dict[str, str]:
    """``{path: display name}``: a layer's own Keras name when that name is unique in the
    model, else its full path."""
    walked = walk(model)
    counts = Counter(layer.name for _, layer in walked)
    return {path: (layer.name if counts[layer.name] == 1 else path) for path, layer in walked}


def layer_names(model: Any, info: ModelInfo | None = None) -> dict[str, str]:
    """Every addressable layer, name → layer path (the same type as the torch adapter's):
    the info's friendly names first, then each layer's display name, then its full path."""
    display = _display(model)
    names: dict[str, str] = dict(info.layers) if info is not None else {}
    for path, name in display.items():
        names.setdefault(name, path)
    for path in display:
        names.setdefault(path, path)
    return names


def default_layers(model: Any, info: ModelInfo | None = None) -> list[str]:
    """The default layers: the info's friendly names, else every 2-D convolution (nested
    models' included), by display name."""
    if info is not None and info.layers:
        return list(info.layers)
    display = _display(model)
    return [display[path] for path, layer in walk(model) if is_conv(layer)]


def resolve_layers(model: Any, layers: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
    """``(display name, layer path)`` pairs; see :func:`layerscope.capture.match_layers`."""
    names = layer_names(model, info)
    default = default_layers(model, info)
    if layers is None and not default:
        raise ModelError(f"Keras model {model.name!r} has no Conv2D layer; name the layers to explain")
    out, seen = [], set()
    for name, path in match_layers(layers, names, default):
        if path not in seen:  # a glob can match a layer by its name and by its path
            seen.add(path)
            out.append((name, path))
    return out


def patch_size(model: Any) -> int | None:
    """The patch size of a Keras vision transformer: the first ``Conv2D`` whose strides equal
    its kernel (> 1), as a patch embedding is; ``None`` if there is none."""
    kl = _keras().layers
    for _, layer in walk(model):
        if isinstance(layer, kl.Conv2D):
            k, s = tuple(layer.kernel_size), tuple(layer.strides)
            if k == s and s[0] == s[1] > 1:
                return int(s[0])
    return None


class _Taps:
    """Temporary ``call`` wrappers on the chosen layers that keep each layer's output.

    ``hw`` (the input's height and width) and ``patch`` let a ``(N, T, C)`` token output be
    kept as a map: its :class:`~layerscope.capture.keras.device_arrays.TokenLayout` goes into
    ``layouts`` (the maps collector's), as the torch adapter lays out tokens.
    """

    def __init__(
        self,
        chosen: Sequence[tuple[str, Any]],
        strict: bool = True,
        hw: tuple[int, int] | None = None,
        patch: int | None = None,
        layouts: dict[str, Any] | None = None,
    ) -> None:
        self.chosen = list(chosen)
        self.strict = strict
        self.hw, self.patch = hw, patch
        self.layouts = layouts if layouts is not None else {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.acts: dict[str, Any] = {}
        self.order: list[str] = []
        self.bad: dict[str, Any] = {}
        self.on_act: Callable[[Any], Any] | None = None
        self.probes: dict[str, Any] | None = None
        self._saved: list[tuple[Any, Any]] = []
        self._warned: set[str] = set()

    def reset(self) -> None:
        self.acts, self.order, self.bad = {}, [], {}

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if not self.strict:  # a listing: any output's shape
                if name not in self.shapes and getattr(out, "shape", None) is not None:
                    self.shapes[name] = tuple(int(d) for d in out.shape[1:])
                    self.order.append(name)
                return out
            if name in self.acts or name in self.bad:
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(
                        f"layer {name!r} runs more than once per forward pass; its first call is used",
                        stacklevel=2,
                    )
                return out
            shape = getattr(out, "shape", None)
            tokens = shape is not None and len(shape) == 3 and self._tokens(name, tuple(int(d) for d in shape))
            if shape is None or (len(shape) != 4 and not tokens):
                # raised after the pass: Keras rewrites errors raised in call
                self.bad[name] = tuple(shape) if shape is not None else type(out).__name__
                return out
            self.acts[name] = out
            self.order.append(name)
            if self.on_act is not None:
                self.on_act(out)
            if self.probes is not None:
                out = out + self.probes[name]
            return out

        return call

    def _tokens(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether a ``(N, T, C)`` output's tokens (after a few extra ones) tile the input;
        if so its layout goes into ``layouts``."""
        from layerscope.capture.keras.device_arrays import TokenLayout

        if isinstance(self.layouts.get(name), TokenLayout):
            return True
        if self.hw is None:
            return False
        found = token_grid(shape[1], self.hw, self.patch)
        if found is not None:
            self.layouts[name] = TokenLayout(*found, shape[1])
        return found is not None

    def __enter__(self) -> _Taps:
        try:
            for name, layer in self.chosen:
                self._saved.append((layer, layer.__dict__.get("call", _MISSING)))
                layer.__dict__["call"] = self._wrap(name, layer.call)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer, prev in reversed(self._saved):
            if prev is _MISSING:
                layer.__dict__.pop("call", None)
            else:
                layer.__dict__["call"] = prev
        self._saved.clear()

    def check(self, wanted: Sequence[str]) -> None:
        """Raise for a chosen layer that did not run or does not output a feature map."""
        for name, shape in self.bad.items():
            tokens = isinstance(shape, tuple) and len(shape) == 3
            raise UsageError(
                f"layer {name!r} outputs {shape}, not a (N, h, w, C) feature map"
                + (
                    f"; its {shape[1]} tokens form no grid of the input (a Keras model's token layers are "
                    f"laid out as maps when their tokens, after at most {MAX_EXTRA_TOKENS} class or register "
                    "tokens, tile the input): choose another layer"
                    if tokens
                    else ""
                )
            )
        missing = [n for n in wanted if n not in self.acts]
        if missing:
            raise ModelError(
                f"layer(s) {', '.join(repr(n) for n in missing)} did not run in the forward pass: a model "
                "that computes them without calling the layer (keras.ops on its weights) cannot be explained there"
            )
