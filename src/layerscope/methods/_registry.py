"""The registry of CAM methods: :class:`Method` (one descriptor of what a method needs),
:func:`register`, :func:`get_method`, :func:`list_methods`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from layerscope.errors import UsageError, unknown_name

CamFn = Callable[..., Any]

#: Keyword parameters the capture hands to a method (never user options).
CONTEXT = ("probe", "saliency", "extra", "grid", "hvp")

#: What a method can need from the capture (``Method.needs``; ``layerscope.capture`` uses this one).
NEEDS = ("activations", "gradients", "perturbation", "saliency", "attention", "layer_scores", "score", "hessian")

#: The needs every adapter serves (one forward, one backward).
ONE_PASS = frozenset({"activations", "gradients"})


@dataclass(frozen=True)
class Method:
    """A registered CAM method.

    Attributes:
        name: registry name, as given to ``explain(method=...)`` and ``--method``.
        title: display name for captions, e.g. "Grad-CAM".
        fn: ``fn(activations, gradients, **options) -> cam``. Its keyword parameters after
            the first two, with their defaults, are the method's options (:attr:`options`):
            written once, in the signature. ``probe``, ``saliency``, ``extra`` and ``grid``
            are what the capture hands over (:data:`CONTEXT`), not options.
        summary: one line for ``layerscope methods``.
        needs: what the capture must compute for it, some of :data:`NEEDS`:
            ``"activations"`` (the layer's output), ``"gradients"`` (of the target w.r.t.
            it: a backward pass), ``"perturbation"`` (the method re-runs the model through
            a probe), ``"saliency"`` (guided backpropagation's input gradient),
            ``"attention"`` (every transformer block's attention weights, stacked, instead of
            a layer's output: ``fn`` gets ``(L, N, H, T, T)`` arrays once and returns one map
            per block), ``"layer_scores"`` (with ``"attention"`` and ``"gradients"``: each
            block's gradients are of that block's own score, the model's head applied to
            the block's output, as LeGrad defines them). The one
            descriptor: :attr:`kind` and :attr:`needs_gradients` are read from it.
            ``"score"``: the method explains its own score of the model's output
            (:attr:`score`; added to the needs when ``score`` is given); ``"hessian"``: the
            layer's Hessian–vector product ``hvp = (∂²y/∂A²)·A`` by double backward, handed
            to ``fn`` as ``hvp=``.
        cost: what one call costs, in passes, for ``layerscope methods``.
        forward_passes: for perturbation methods, ``(images, channels, **options) -> int``,
            the extra forward passes one layer will cost (announced before starting).
        score: ``score(outputs, targets, **options) -> (N,)``: the per-image score whose
            gradient the maps use, from the model's ``(N, K)`` output and the ``(N,)``
            explained classes, instead of ``outputs[i, targets[i]]`` (Finer-CAM's
            ``y_c − γ·y_d``). Written with the array operations torch and numpy share
            (:mod:`layerscope.methods._ops`); it gets every option of the method, whose
            defaults live in ``fn``'s signature.
    """

    name: str
    title: str
    fn: CamFn
    summary: str
    needs: frozenset[str] = frozenset({"activations", "gradients"})
    cost: str = "1 forward + 1 backward, all layers together"
    forward_passes: Callable[..., int] | None = None
    score: Callable[..., Any] | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The method's options and their defaults, read from ``fn``'s signature."""
        params = list(inspect.signature(self.fn).parameters.values())[2:]
        return {
            p.name: p.default
            for p in params
            if p.name not in CONTEXT
            and p.default is not inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }

    def __post_init__(self) -> None:
        needs = frozenset([self.needs] if isinstance(self.needs, str) else self.needs)
        if self.score is not None:
            needs |= {"score"}
        elif "score" in needs:
            raise ValueError(f"method {self.name!r} needs 'score' but gives no score function")
        bad = sorted(needs - set(NEEDS))
        if bad or not needs:
            raise ValueError(f"method {self.name!r}: unknown needs {bad or '(none)'}; expected some of {NEEDS}")
        object.__setattr__(self, "needs", needs)

    @property
    def kind(self) -> str:
        """The needs in one word, for listings: ``"attention"``, ``"pixel"`` (saliency),
        ``"perturbation"``, ``"gradient"`` or ``"activation"``."""
        if "attention" in self.needs:
            return "attention"
        if "saliency" in self.needs:
            return "pixel"
        if "perturbation" in self.needs:
            return "perturbation"
        return "gradient" if "gradients" in self.needs else "activation"

    @property
    def class_agnostic(self) -> bool:
        """Whether the maps ignore the explained class: no gradients, no scores and no
        saliency are needed (Eigen-CAM, attention rollout)."""
        return not self.needs & {"gradients", "perturbation", "saliency"}

    @property
    def needs_gradients(self) -> bool:
        """Whether ``fn`` gets the layer gradients (the capture runs a backward pass)."""
        return "gradients" in self.needs

    @property
    def frameworks(self) -> tuple[str, ...]:
        """The frameworks whose adapter serves the method's needs (the one-pass methods run
        everywhere; perturbation, saliency and attention need PyTorch)."""
        return ("torch", "keras") if self.needs <= ONE_PASS else ("torch",)


def one_pass(chosen: Sequence[tuple[Method, dict[str, Any]]]) -> Method:
    """Several one-pass methods (with their options) as one method, so one forward and one
    backward pass serve them all: each layer's ``(A, G)`` goes to every method, and their
    ``(N, h, w)`` maps are joined along the first axis, method by method, into ``(M·N, h, w)``
    (split again by :func:`layerscope.grid.explain_many`)."""
    from layerscope.methods._ops import concat

    if not chosen or any(not m.needs <= ONE_PASS for m, _ in chosen):
        raise ValueError("one_pass() joins one-pass methods (activations and gradients) only")

    def fn(activations: Any, gradients: Any) -> Any:
        return concat([m.fn(activations, gradients, **opts) for m, opts in chosen])

    names = "+".join(m.name for m, _ in chosen)
    return Method(
        name=names,
        title=" + ".join(m.title for m, _ in chosen),
        fn=fn,
        summary=f"{names} from one pass",
        needs=frozenset().union(*(m.needs for m, _ in chosen)),
    )


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (an existing name is an error)."""
    if method.name in _REGISTRY:
        raise ValueError(f"CAM method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def list_methods() -> list[str]:
    """Names of the registered CAM methods, in registration order."""
    return list(_REGISTRY)


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(unknown_name("CAM method", name, _REGISTRY, n=3, valid="Valid methods")) from None
