"""The registry of CAM methods.

A method is a small pure function of one layer's activations ``A`` and the gradients ``G``
of the target score with respect to them, both shaped ``(N, C, h, w)`` (channels first,
whatever the framework), returning the map after ReLU, shaped ``(N, h, w)``. The arrays may
be torch tensors or numpy arrays: methods use only operations both support (the few that
differ are in :mod:`layerscope.methods._ops`), so the work stays on the model's device.

Methods come in four kinds, which tell the capture what to compute:

``"gradient"``
    ``fn(A, G)``: one forward and one backward pass for every layer at once.
``"activation"``
    ``fn(A, None)``: one forward pass, no gradients (Eigen-CAM).
``"perturbation"``
    ``fn(A, None, probe=...)``: the method re-runs the model on perturbed inputs or with the
    layer's output replaced, through a ``probe`` the capture hands it (see
    :class:`layerscope.capture.torch.Probe`); PyTorch only.
``"pixel"``
    ``fn(A, G, saliency=...)``: maps at the input's resolution that use guided
    backpropagation's input gradient (one more forward and backward); PyTorch only.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerscope.errors import UsageError

CamFn = Callable[..., Any]

#: Keyword parameters the capture hands to a method (never user options).
CONTEXT = ("probe", "saliency")


@dataclass(frozen=True)
class Method:
    """A registered CAM method.

    Attributes:
        name: registry name, as given to ``explain(method=...)`` and ``--method``.
        title: display name for captions, e.g. "Grad-CAM".
        fn: ``fn(activations, gradients, **options) -> cam``. Its keyword parameters after
            the first two, with their defaults, are the method's options (:attr:`options`):
            written once, in the signature. ``probe`` and ``saliency`` are what the capture
            hands over, not options.
        summary: one line for ``layerscope methods``.
        needs_gradients: whether ``fn`` needs the gradients of the target with respect to
            the layer's activations (the capture then runs a backward pass).
        kind: ``"gradient"``, ``"activation"``, ``"perturbation"`` or ``"pixel"`` (see the
            module docstring).
        cost: what one call costs, in passes, for ``layerscope methods``.
        forward_passes: for perturbation methods, ``(images, channels, **options) -> int``,
            the extra forward passes one layer will cost (announced before starting).
    """

    name: str
    title: str
    fn: CamFn
    summary: str
    needs_gradients: bool = True
    kind: str = "gradient"
    cost: str = "1 forward + 1 backward, all layers together"
    forward_passes: Callable[..., int] | None = None

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

    @property
    def needs(self) -> str:
        """What the capture must compute for this method (``CaptureRequest.needs``)."""
        return {"gradient": "gradients", "activation": "activations", "pixel": "saliency"}.get(self.kind, self.kind)

    @property
    def frameworks(self) -> tuple[str, ...]:
        """The frameworks the method works with (perturbation and pixel methods need torch)."""
        return ("torch", "keras") if self.kind in ("gradient", "activation") else ("torch",)


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
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown CAM method {name!r}.{hint} Valid methods: {', '.join(_REGISTRY)}") from None


_NEEDS = {
    "perturbation": "re-runs the model on perturbed inputs or with a layer's output replaced",
    "pixel": "needs guided backpropagation (rewritten ReLU gradients)",
}


def check_framework(method: Method, framework: str) -> None:
    """Raise a clear :class:`UsageError` if ``method`` cannot run on ``framework``'s models."""
    if framework in method.frameworks:
        return
    usable = [n for n, m in _REGISTRY.items() if framework in m.frameworks]
    name = {"keras": "Keras", "torch": "PyTorch"}.get(framework, framework)
    raise UsageError(
        f"method {method.name!r} is not available for {name} models: it {_NEEDS.get(method.kind, method.kind)}, "
        f"which layerscope does for PyTorch models only; available for {name}: {', '.join(usable)}"
    )


# Importing these registers their methods, in this order.
from layerscope.methods import gradient as _gradient  # noqa: E402,F401,I001
from layerscope.methods import activation as _activation  # noqa: E402,F401
from layerscope.methods import perturbation as _perturbation  # noqa: E402,F401
from layerscope.methods import guided as _guided  # noqa: E402,F401
