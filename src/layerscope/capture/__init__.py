"""Capture adapters: run a model once and hand each chosen layer's activation and gradient
to the method's map function.

One class per framework implements the :class:`Adapter` protocol (``TorchAdapter`` in
:mod:`layerscope.capture.torch`, ``KerasAdapter`` in :mod:`layerscope.capture.keras`);
:func:`get_adapter` returns an instance, importing the framework only then. Both have the
same signatures and return types:

``resolve_layers(model, spec, info) -> list[tuple[str, str]]``
    ``(display name, framework path)`` pairs for the requested layers (``None`` = the
    default layers: the info's friendly names, else every conv layer; names, glob patterns,
    or a list of them). Unknown names raise :class:`~layerscope.errors.UsageError` listing
    close matches.

``layer_shapes(model, size, info, every_module=False) -> list[LayerShape]``
    every default layer (or every leaf module/layer) with its real per-image output shape
    for an input of ``size`` = ``(height, width)``: what ``layerscope layers`` prints.

``run(model, x, layers, targets, request) -> CaptureResult``
    what the :class:`CaptureRequest` asks for: one forward pass, then (for gradient
    methods) one backward pass of the target scores with respect to the captured
    activations only; ``request.fn(A, G, **context)`` gets channels-first ``(N, C, h, w)``
    arrays as soon as a layer's gradient is known and returns its ``(N, h, w)`` map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from layerscope.errors import UsageError
from layerscope.info import ModelInfo

#: What a method needs from the capture (``CaptureRequest.needs``).
NEEDS = ("gradients", "activations", "perturbation", "saliency")

#: ``CaptureRequest.precision`` values (see :func:`layerscope.explain`).
PRECISIONS = ("default", "highest", "fast")


@dataclass(frozen=True)
class CaptureRequest:
    """What one capture run must compute, derived from the method.

    Attributes:
        fn: ``fn(A, G, **context) -> (N, h, w)`` map; ``G`` is ``None`` when ``needs`` is
            ``"activations"`` or ``"perturbation"``. ``context`` is ``probe=`` for
            perturbation methods and ``saliency=`` for saliency methods.
        needs: ``"gradients"`` (one forward + one backward for all layers),
            ``"activations"`` (one forward, no gradients), ``"perturbation"`` (the method
            re-runs the model through a probe) or ``"saliency"`` (guided backpropagation's
            input gradient first, then the one-pass capture).
        layer_gradients: for ``"saliency"``: whether ``fn`` also needs the layer gradients.
        output: the model's output kind (``"logits"``, ``"probabilities"`` or ``None`` to
            detect), for methods that score probabilities.
        forward_passes: for perturbation methods, ``(images, channels) -> passes`` that one
            layer costs, announced before starting.
        label: the method's name, for logs and progress bars.
        device: where to run (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``);
            ``None``: where the model is. A torch model elsewhere is moved there for the run
            and moved back afterwards.
        precision: ``"default"`` (the framework's own settings), ``"highest"`` (no TF32) or
            ``"fast"`` (float16 forward on CUDA/MPS, channels-last; CAM math in float32).
        output_key: which part of a dict / tuple / ``ModelOutput`` output holds the scores
            (``None``: ``logits``, else the first tensor).
        reshape: a callable from a chosen layer's output to an ``(N, C, h, w)`` tensor, for
            layouts the capture cannot infer (``None``: feature maps as they are, token
            ``(N, T, C)`` and channels-last ``(N, h, w, C)`` outputs laid out automatically).
    """

    fn: Callable[..., Any]
    needs: str = "gradients"
    layer_gradients: bool = True
    output: str | None = None
    forward_passes: Callable[[int, int], int] | None = None
    label: str = ""
    device: str | None = None
    precision: str = "default"
    output_key: str | int | None = None
    reshape: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.needs not in NEEDS:
            raise UsageError(f"unknown capture need {self.needs!r}; expected one of {', '.join(NEEDS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")


@dataclass
class CaptureResult:
    """What one capture run returns. ``layers`` are display names in forward order; maps and
    outputs are host numpy arrays (one transfer at the end of the run)."""

    layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    cams: dict[str, np.ndarray]
    outputs: np.ndarray
    targets: np.ndarray
    nonfinite: list[str] = field(default_factory=list)
    #: ``{layer: "tokens 197 → 14×14"}`` for layers whose output was laid out as a grid
    #: (token or channels-last outputs), for captions.
    grids: dict[str, str] = field(default_factory=dict)
    #: ``(N,)`` the explained scores when the target was a callable (``targets`` is then the
    #: top-1 class, for display); ``None`` for class targets.
    scores: np.ndarray | None = None


class LayerShape(NamedTuple):
    """One row of a layer listing."""

    name: str
    path: str
    shape: tuple[int, ...]


@runtime_checkable
class Adapter(Protocol):
    """The contract of a framework's capture adapter (see the module docstring)."""

    name: str

    def resolve_layers(self, model: Any, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]: ...

    def layer_shapes(
        self, model: Any, size: tuple[int, int], info: ModelInfo | None = None, every_module: bool = False
    ) -> list[LayerShape]: ...

    def run(
        self,
        model: Any,
        x: Any,
        layers: Sequence[tuple[str, str]],
        targets: int | Sequence[int] | None,
        request: CaptureRequest,
    ) -> CaptureResult: ...


def detect_framework(model: Any) -> str:
    """``"torch"`` or ``"keras"``, from the model's class, without importing either."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("keras", "tf_keras"):
            return "keras"
    raise UsageError(f"cannot explain a {type(model).__name__}: expected a torch.nn.Module or a keras.Model")


def get_adapter(framework: str) -> Adapter:
    """The adapter for ``framework`` (the framework is imported only now)."""
    if framework == "torch":
        from layerscope.capture.torch import TorchAdapter

        return TorchAdapter()
    if framework == "keras":
        from layerscope.capture.keras import KerasAdapter

        return KerasAdapter()
    raise UsageError(f"unknown framework {framework!r}; expected 'torch' or 'keras'")


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
                raise UsageError(f"layer pattern {spec!r} matches no layer; {_listing(default or list(names))}")
        else:
            close = difflib.get_close_matches(spec, names, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UsageError(f"unknown layer {spec!r}{hint} (list them with `layerscope layers`)")
        for n in found:
            chosen.setdefault(n, names[n])
    return list(chosen.items())


def _listing(layers: list[str], most: int = 16) -> str:
    """``"the layers: a, b, … (N in all; `layerscope layers` lists them)"``, shortened."""
    shown = layers if len(layers) <= most else [*layers[: most // 2], "…", *layers[-most // 2 :]]
    return f"the layers: {', '.join(shown)} ({len(layers)} in all; `layerscope layers` lists them)"


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
