"""Whether an adapter serves a method's needs, said in one clear line when it does not."""

from __future__ import annotations

from typing import Any

from layerscope.capture._registry import frameworks, get_adapter
from layerscope.errors import UsageError
from layerscope.methods import Method, get_method, list_methods

_TITLES = {"torch": "PyTorch", "keras": "Keras"}

_WHY = {
    "perturbation": "re-runs the model on perturbed inputs or with a layer's output replaced",
    "saliency": "needs guided backpropagation (rewritten ReLU gradients)",
    "attention": "needs the attention weights of every transformer block",
    "score": "differentiates its own score of the model's output",
    "hessian": "needs Hessian–vector products (a double backward)",
}


def served_by(test: Any) -> str:
    """The frameworks whose adapter passes ``test(supports)``, as ``"PyTorch"``."""
    names = [_TITLES.get(f, f) for f in frameworks() if test(get_adapter(f).supports)]
    return " and ".join(names) or "no"


def check_supported(method: Method, framework: str) -> None:
    """Raise a clear :class:`UsageError` if ``framework``'s adapter cannot serve ``method``'s needs."""
    supports = get_adapter(framework).supports
    if method.needs <= supports.needs:
        return
    missing = sorted(method.needs - supports.needs)
    usable = [n for n in list_methods() if get_method(n).needs <= supports.needs]
    name = _TITLES.get(framework, framework)
    serves = served_by(lambda s: method.needs <= s.needs)
    raise UsageError(
        f"method {method.name!r} is not available for {name} models: it {_WHY.get(missing[0], 'needs ' + missing[0])}, "
        f"which layerscope does for {serves} models only; available for {name}: {', '.join(usable)}"
    )
