"""The contract between the explanation and a framework's capture adapter: what a run
must compute (:class:`CaptureRequest`), what it returns (:class:`CaptureResult`), what an
adapter can do (:class:`Supports`) and the :class:`Adapter` protocol itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from layerscope.errors import UsageError
from layerscope.info import ModelInfo
from layerscope.methods._registry import NEEDS as _NEEDS

#: What a method can need from the capture (``Method.needs``, ``CaptureRequest.needs``):
#: defined once, in the method registry.
NEEDS = _NEEDS


def as_needs(needs: str | Sequence[str] | frozenset[str]) -> frozenset[str]:
    """``needs`` as a checked frozenset (one name is a set of one)."""
    got = frozenset([needs] if isinstance(needs, str) else needs)
    bad = sorted(got - set(NEEDS))
    if bad or not got:
        raise UsageError(f"unknown capture need {bad[0] if bad else needs!r}; expected some of {', '.join(NEEDS)}")
    return got


#: ``CaptureRequest.precision`` values (see :func:`layerscope.explain`).
PRECISIONS = ("default", "highest", "fast")


@dataclass(frozen=True)
class CaptureRequest:
    """What one capture run must compute, derived from the method.

    Attributes:
        fn: ``fn(A, G, **context) -> (N, h, w)`` map; ``G`` is ``None`` unless ``needs``
            holds ``"gradients"``. ``context`` is ``probe=`` for perturbation methods and
            ``saliency=`` for saliency methods.
        needs: the method's needs (:data:`NEEDS`, as ``Method.needs``): with
            ``"gradients"`` one forward + one backward for all layers, else one forward;
            ``"perturbation"``: the method re-runs the model through a probe;
            ``"saliency"``: guided backpropagation's input gradient first, then the
            one-pass capture; ``"score"``: the gradients are those of :attr:`score`;
            ``"hessian"``: ``fn`` also gets each layer's Hessian–vector product as
            ``hvp=`` (one double backward for every layer). One name is accepted for a set
            of one.
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
        size_hint: what to tell the user when the model rejects the input's size
            (``ModelInfo.size_hint``, e.g. ``"this model takes 64×64 images: --size 64"``).
        score: ``(outputs (N, K), targets (N,)) -> (N,)`` scores to differentiate instead of
            ``outputs[i, targets[i]]`` (the method's ``Method.score``, options bound);
            ``None``: the target class's output.
    """

    fn: Callable[..., Any]
    needs: frozenset[str] = frozenset({"activations", "gradients"})
    output: str | None = None
    forward_passes: Callable[[int, int], int] | None = None
    label: str = ""
    device: str | None = None
    precision: str = "default"
    output_key: str | int | None = None
    reshape: Callable[[Any], Any] | None = None
    size_hint: str | None = None
    score: Callable[[Any, Any], Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", as_needs(self.needs))
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
    #: ``{layer: "output" | "patch tokens"}``: layers the explained score does not depend
    #: on (their gradient is zero, so their map is flat for that reason): backward never
    #: reached the layer's output, or reached only its class token (a CLS-token ViT's last
    #: block: the class token's score does not read the block's patch tokens)
    blocked: dict[str, str] = field(default_factory=dict)
    #: a detector's detections per image (``boxes``, ``labels``, ``scores``, ``size``,
    #: ``explained``; see :mod:`layerscope.targets.box`), ``None`` for other models
    detections: list[dict[str, Any]] | None = None


class LayerShape(NamedTuple):
    """One row of a layer listing."""

    name: str
    path: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Supports:
    """What an adapter can do, so callers never name a framework.

    Attributes:
        devices: the device spellings :meth:`Adapter.resolve_device` accepts (``"cuda:N"``
            stands for any index); ``("auto",)``: the model runs where its framework put it.
        precisions: the ``CaptureRequest.precision`` values it honours.
        needs: the method needs (:data:`NEEDS`) it can serve.
        several_inputs: whether a tuple / dict batch (several model inputs) works.
    """

    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    needs: frozenset[str]
    several_inputs: bool = False


@runtime_checkable
class Adapter(Protocol):
    """The contract of a framework's capture adapter (see :mod:`layerscope.capture`)."""

    name: str
    supports: Supports

    def resolve_device(self, spec: str | None) -> Any:
        """The device for ``spec`` (``None``: the model stays where it is, returns ``None``);
        an unknown, unavailable or unsupported device raises ``UsageError``."""
        ...

    def placed(self, model: Any, device: Any) -> Any:
        """A context manager: the model on ``device`` for the block, moved back afterwards."""
        ...

    def move(self, model: Any, device: Any) -> None:
        """Move the model to ``device`` for good (``None``: leave it)."""
        ...

    def accelerators(self) -> int:
        """How many accelerators (GPUs) this process sees for this framework."""
        ...

    def weights_digest(self, model: Any) -> str:
        """SHA-256 of the model's parameters and buffers (names, dtypes, shapes and values):
        what a data-set run's fingerprint records, so a resumed run uses the same weights."""
        ...

    def resolve_layers(self, model: Any, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]: ...

    def layer_shapes(
        self,
        model: Any,
        size: tuple[int, int],
        info: ModelInfo | None = None,
        every_module: bool = False,
        run_model: Any = None,
    ) -> list[LayerShape]: ...

    def run(
        self,
        model: Any,
        x: Any,
        layers: Sequence[tuple[str, str]],
        targets: int | Sequence[int] | None,
        request: CaptureRequest,
    ) -> CaptureResult: ...
