"""What the perturbation metrics share: the model's device, the explained score, maps brought
to the input's size, and one loop that streams perturbed inputs through the model in large
batches. torch is imported inside the functions (``import layerscope.evaluate`` stays light).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.resize import resize_bilinear

#: What a perturbation metric scores: the softmax probability of the target class (the
#: papers' choice), or the raw model output for that class.
SCORES = ("probability", "logit")


def model_device(model: Any) -> Any:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    import torch

    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@dataclass
class Context:
    """One batch of images of one model: the input on the model's device and the targets.

    Attributes:
        model: the torch model (left in the mode it was given in; the metrics only run it
            under ``torch.inference_mode``).
        x: float ``(N, C, H, W)`` tensor on the model's device.
        targets: long ``(N,)`` tensor on the same device.
        output: ``"logits"`` or ``"probabilities"`` (what the model returns).
        score: ``"probability"`` or ``"logit"`` (what is measured).
        scorer: ``scorer(model_output, image_index (B,)) -> (B,)`` scores, measured instead
            of a class's (a detection's score: :mod:`layerscope.evaluate.boxes`), or ``None``.
    """

    model: Any
    x: Any
    targets: Any
    output: str
    score: str
    scorer: Callable[[Any, Any], Any] | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])


def make_context(
    model: Any, x: Any, targets: Any, output: str | None, score: str, scorer: Callable[[Any, Any], Any] | None = None
) -> Context:
    """Check the arguments and move the input and targets to the model's device."""
    import torch

    if score not in SCORES:
        raise UsageError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    if output not in (None, "logits", "probabilities"):
        raise UsageError(f"unknown output kind {output!r}; expected 'logits' or 'probabilities'")
    if not isinstance(model, torch.nn.Module):
        raise UsageError("the perturbation metrics need a PyTorch model (torch.nn.Module)")
    device = model_device(model)
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if xt.ndim != 4:
        raise UsageError(f"images must be a preprocessed (N, C, H, W) batch, got shape {tuple(xt.shape)}")
    xt = xt.detach().to(device=device, dtype=torch.float32)
    t = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(-1), device=device)
    if t.shape[0] != xt.shape[0]:
        raise UsageError(f"{xt.shape[0]} images but {t.shape[0]} targets")
    return Context(model, xt, t, output or "logits", score, scorer)


def as_map_list(maps: Any, n: int) -> tuple[list[np.ndarray], bool]:
    """``(N, h, w)`` or a sequence of them → a list of float32 arrays, and whether one was given."""
    single = not isinstance(maps, (list, tuple))
    items = [maps] if single else list(maps)
    out = []
    for m in items:
        a = np.asarray(m.detach().cpu().numpy() if hasattr(m, "detach") else m, dtype=np.float32)
        if a.ndim != 3 or a.shape[0] != n or min(a.shape[1:]) < 1:
            raise UsageError(f"maps must be shaped (N, h, w) with N = {n} images, got {a.shape}")
        out.append(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0))
    return out, single


def upsampled(maps: np.ndarray, size: tuple[int, int], device: Any) -> Any:
    """Maps as a float32 tensor on ``device``, enlarged to the input's ``size`` (bilinear,
    half-pixel centres: :mod:`layerscope.resize`)."""
    import torch

    return resize_bilinear(torch.as_tensor(maps, device=device, dtype=torch.float32), size)


def ranks(maps: np.ndarray, size: tuple[int, int], device: Any) -> Any:
    """Each input pixel's rank by map value, 0 for the most relevant: ``(N, H·W)`` long.

    The map is enlarged to the input's size, then sorted in descending order with a
    *stable* sort, so ties (a flat map, or the flat border band of an enlarged one) keep
    raster order — the convention of torchcam's ``DeletionInsertionMetric``.
    """
    import torch

    up = upsampled(maps, size, device).flatten(1)
    order = torch.argsort(up, dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def run_jobs(
    n_jobs: int,
    make: Callable[[slice], tuple[Any, Any]],
    ctx: Context,
    perturb_batch: int,
    bar: Any = None,
    predict: bool = False,
) -> Any:
    """Score ``n_jobs`` perturbed inputs, ``perturb_batch`` per forward pass.

    Args:
        n_jobs: number of perturbed inputs.
        make: ``make(slice) -> (inputs (B, C, H, W), image index (B,))`` builds a chunk.
        ctx: the images' context.
        perturb_batch: inputs per forward pass.
        bar: a tqdm bar to advance by the inputs scored (or ``None``).
        predict: also return whether the model's top-1 class is the target.

    Returns:
        float32 ``(n_jobs,)`` scores on the CPU (and a bool ``(n_jobs,)`` array if ``predict``).
    """
    import torch

    if perturb_batch < 1:
        raise UsageError(f"perturb_batch must be at least 1, not {perturb_batch}")
    out = torch.empty(n_jobs, dtype=torch.float32, device=ctx.x.device)
    hit = torch.empty(n_jobs, dtype=torch.bool, device=ctx.x.device)
    for start in range(0, n_jobs, perturb_batch):
        sl = slice(start, min(start + perturb_batch, n_jobs))
        xb, index = make(sl)
        with torch.inference_mode():
            raw = ctx.model(xb)
            if ctx.scorer is not None:
                out[sl] = ctx.scorer(raw, index).float()
                if bar is not None:
                    bar.update(sl.stop - sl.start)
                continue
            if not isinstance(raw, torch.Tensor):
                raise UsageError("the model must return one (N, classes) tensor for the perturbation metrics")
            raw = raw.float()
            probs = torch.softmax(raw, dim=1) if ctx.score == "probability" and ctx.output != "probabilities" else raw
            tgt = ctx.targets[index]
            out[sl] = probs.gather(1, tgt.unsqueeze(1)).squeeze(1)
            if predict:
                hit[sl] = raw.argmax(dim=1) == tgt
        if bar is not None:
            bar.update(sl.stop - sl.start)
    scores = out.cpu().numpy()
    return (scores, hit.cpu().numpy()) if predict else scores


def progress_bar(total: int, desc: str, enabled: bool | Any) -> Any:
    """A tqdm bar of ``total`` forward passes, a bar given by the caller, or ``None``."""
    if enabled is False or enabled is None:
        return None
    if enabled is not True:
        return enabled  # the caller's bar: it counts for us
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pass", leave=False)


def close_bar(bar: Any, enabled: Any) -> None:
    if bar is not None and enabled is True:
        bar.close()


def check_fractions(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out or any(not 0.0 < v < 1.0 for v in out):
        raise UsageError(f"{name} must be fractions strictly between 0 and 1, got {list(values)}")
    return out
