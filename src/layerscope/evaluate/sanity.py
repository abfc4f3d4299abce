"""The model-randomisation sanity check (Adebayo et al. 2018): are the maps of a trained model
unlike those of the same network with random weights?
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.evaluate._registry import Batch, Column, Metric, register


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1…n of a 1-D array, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each group of ties
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation between ``a[i]`` and ``b[i]``, for each sample ``i``.

    :math:`\\rho = \\operatorname{corr}(\\operatorname{rank}(a_i), \\operatorname{rank}(b_i))`,
    the Pearson correlation of the ranks, with tied values given the mean of their ranks
    (as ``scipy.stats.spearmanr``). Used for the model-randomisation sanity check
    (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the maps of a
    trained model and of the same model with random weights should not be alike.

    Args:
        a: ``(N, ...)`` array; each sample is flattened.
        b: array of the same shape.

    Returns:
        float64 ``(N,)`` in ``[-1, 1]``; NaN where a sample of ``a`` or ``b`` is constant
        (the correlation is undefined there) or holds NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 2:
        raise ValueError(f"expected (N, ...) arrays of N samples, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.isnan(a[i]).any() or np.isnan(b[i]).any():
            continue
        ra = _average_ranks(a[i])
        rb = _average_ranks(b[i])
        ra -= ra.mean()
        rb -= rb.mean()
        denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
        if denom > 0:
            out[i] = float(np.clip((ra * rb).sum() / denom, -1.0, 1.0))
    return out


def randomisable_modules(model: Any) -> list[str]:
    """The names of the modules a cascade re-initialises, in forward (registration) order:
    every module with its own ``reset_parameters`` (convs, linears, norms), as Quantus."""
    return [name for name, mod in model.named_modules() if name and hasattr(mod, "reset_parameters")]


def cascading_randomisation(model: Any, seed: int = 0) -> Iterator[tuple[str, Any]]:
    """Cascading model randomisation (Adebayo et al. 2018, §3.1): a copy of the model whose
    parameterised modules are re-initialised one more at a time, from the output down.

    Step ``k`` (0-based) re-initialises the ``k``-th module from the top by its own
    ``reset_parameters()`` (torch's default initialisation, as Quantus' ``MPRT``) right after
    ``torch.manual_seed(seed + k)``; the random state of the caller is restored afterwards.
    The caller's model is not touched; the same copy is yielded at every step (further
    randomised each time), in evaluation mode.

    Args:
        model: a ``torch.nn.Module``.
        seed: the first step's seed.

    Yields:
        ``(module name, randomised copy)``, from the top module to the first one.
    """
    import copy

    import torch

    if not isinstance(model, torch.nn.Module):
        raise UsageError("the model-randomisation check needs a PyTorch model (torch.nn.Module)")
    names = randomisable_modules(model)
    if not names:
        raise UsageError("the model has no module with parameters to randomise")
    clone = copy.deepcopy(model).eval()
    modules = dict(clone.named_modules())
    for k, name in enumerate(reversed(names)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + k)
            with torch.no_grad():
                modules[name].reset_parameters()
        yield name, clone


def randomised_model(model: Any, seed: int = 0) -> Any:
    """A copy of ``model`` with every parameterised module re-initialised: the last step of
    :func:`cascading_randomisation` (the "random model" baseline)."""
    steps = cascading_randomisation(model, seed)
    last = next(steps)[1]
    for _, last in steps:  # noqa: B007 - the last step is the fully random model
        pass
    return last


@dataclass
class Randomisation:
    """Rank correlations between the trained model's maps and the randomised models'.

    Attributes:
        method: the CAM method.
        layers: the layers whose maps were compared.
        steps: the module re-initialised at each cascade step (top first); the last step
            is the fully random model.
        correlation: float64 ``(S, L, N)``, step × layer × image (NaN where a map is
            constant, e.g. all zero).
    """

    method: str
    layers: list[str]
    steps: list[str]
    correlation: np.ndarray

    def mean(self) -> np.ndarray:
        """``(S, L)`` the mean over images, ignoring NaN (NaN where every image is NaN)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.correlation, axis=-1)

    def final(self) -> np.ndarray:
        """``(L,)`` the mean correlation with the fully random model, per layer."""
        return self.mean()[-1]


def randomisation_check(
    model: Any,
    x: Any,
    method: str = "gradcam",
    layers: str | Sequence[str] | None = None,
    targets: Any = None,
    *,
    trained: dict[str, np.ndarray] | None = None,
    cascade: bool = True,
    seed: int = 0,
    info: Any = None,
    absolute: bool = False,
    randomised: Any = None,
    **method_options: Any,
) -> Randomisation:
    """The model-randomisation sanity check of Adebayo, Gilmer, Muelly, Goodfellow, Hardt and
    Kim ("Sanity Checks for Saliency Maps", NeurIPS 2018), per layer.

    The maps of every chosen layer, by the trained model and by the model with its
    parameterised modules re-initialised in a cascade from the top
    (:func:`cascading_randomisation`), are compared by Spearman's rank correlation
    (:func:`rank_correlation`, at the layer's own resolution; with ``absolute=True`` the
    paper's "absolute value" variant, ranks of ``|map|``, which is the same for CAMs after
    ReLU). A map that explains the model should lose its likeness fast: correlations near 0
    pass; a correlation that stays high (an edge detector, the input itself) fails. The
    targets stay the trained model's classes at every step.

    Cost: one capture (one forward + one backward for the one-pass methods) per cascade
    step, or one with ``cascade=False`` (the fully random model only).

    Args:
        model: a torch model.
        x: the preprocessed batch ``(N, C, H, W)``.
        method: a CAM method name.
        layers: as :func:`layerscope.explain`.
        targets: ``(N,)`` classes (default: the trained model's top-1).
        trained: the trained model's maps ``{layer: (N, h, w)}`` if already computed (a
            tour's capture), with ``targets`` given.
        cascade: every step (``True``) or only the fully random model.
        seed: the first cascade step's seed.
        info: the model's :class:`~layerscope.info.ModelInfo` (default: the one it carries).
        absolute: rank absolute values.
        randomised: an iterable of ``(name, model)`` cascade steps to use instead of
            :func:`cascading_randomisation` (e.g. Quantus' ``get_random_layer_generator``).
        **method_options: the method's options.

    Returns:
        A :class:`Randomisation`.
    """
    from layerscope.explanation import explain
    from layerscope.info import info_for

    facts = info_for(model, info)
    if trained is None or targets is None:
        exp = explain(model, x, layers, method, targets, info=facts, **method_options)
        trained, targets, names = exp.cams, exp.targets, list(exp.layers)
    else:
        names = list(trained)
    targets = [int(t) for t in np.asarray(targets).reshape(-1)]
    steps: list[str] = []
    rows = []
    count = len(randomisable_modules(model))
    chosen = set(range(count)) if cascade or randomised is not None else {count - 1}
    source = cascading_randomisation(model, seed) if randomised is None else randomised
    for k, (name, random_model) in enumerate(source):
        if k not in chosen and randomised is None:
            continue
        exp_r = explain(random_model, x, names, method, targets, info=facts, **method_options)
        per_layer = []
        for layer in names:
            a, b = trained[layer], exp_r.cams[layer]
            if absolute:
                a, b = np.abs(a), np.abs(b)
            per_layer.append(rank_correlation(a, b))
        steps.append(name)
        rows.append(per_layer)
    return Randomisation(method, names, steps, np.asarray(rows, dtype=np.float64))


def _score(batch: Batch) -> dict[str, list[np.ndarray]]:
    assert batch.random_maps is not None  # needs_random: the suite gives them
    return {
        "randomisation_rank_corr": [rank_correlation(a, b) for a, b in zip(batch.maps, batch.random_maps, strict=True)]
    }


register(
    Metric(
        "sanity",
        (Column("randomisation_rank_corr", "Rank corr. with random model", "zero"),),
        _score,
        needs_random=True,
        baseline=False,  # the random model's maps against themselves would say nothing
        order=70,
    )
)
