"""Build helpers the loader and the external models share, below both (they import nothing
of the zoo): the ``meta`` device, allocation and filling from a state dict, input size and
preprocessing overrides, the random-weights note."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from layerscope.errors import UsageError, WeightsError
from layerscope.info import ModelInfo
from layerscope.inputs import CaffePreprocess, Preprocess

#: The note drawn on the frames of a model with random weights.
RANDOM_NOTE = "RANDOM WEIGHTS"
#: The pip package behind each ``PREFIX:`` of other people's models.
PIP_NAMES = {"torchvision": "torchvision", "timm": "timm", "hf": "transformers"}
#: The largest input side accepted without being asked for explicitly (``size=``/``--size``):
#: a model's own config saying more (a hostile ``image_size: 3000``) is capped to this.
MAX_MODEL_SIDE = 1024


def on_meta(build: Callable[[], Any]) -> Any:
    """``build()`` with every parameter and buffer on the ``meta`` device: no memory, no init."""
    import torch

    with torch.device("meta"):
        return build()


def allocate(model: Any, device: Any) -> Any:
    """``model.to_empty(device=device)``, done with ``torch.empty``: ``to_empty``'s
    ``empty_like`` on a meta tensor goes through ``torch._refs``, which imports sympy (about
    35 MB and a second) for nothing."""
    import torch

    return model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))


def materialise(
    model: Any, state: dict[str, Any] | None, source: str, init: Callable[[Any, int], None] | None, seed: int
) -> Any:
    """Allocate a ``meta`` model's tensors on the CPU, then fill them: from ``state`` (every
    key and shape checked first), and with ``init(model, seed)`` where ``state`` does not
    cover the model (``state=None``: all of it)."""
    from layerscope.models.weights import apply_state_dict, check_state_dict

    partial = False
    if state is not None:
        partial = bool(check_state_dict(model, state, source, strict=init is None))
    model = allocate(model, "cpu")
    if state is None or partial:
        if init is None:
            raise WeightsError(f"{source}: does not cover the whole model")
        init(model, seed)
    if state is not None:
        apply_state_dict(model, state, source, strict=False)
    return model


def size_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as ``(height, width)`` (one number: square), checked positive."""
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise UsageError(f"size must be one positive number or (height, width), not {size!r}")
    return size  # type: ignore[return-value]


def with_preprocess(
    info: ModelInfo,
    size: int | tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ModelInfo:
    """``info`` with its preprocessing's input size, mean or std replaced (those given)."""
    hw = size_hw(size)
    if hw is None and mean is None and std is None:
        return info
    prep = info.preprocess
    if isinstance(prep, CaffePreprocess):
        if mean is not None or std is not None:
            raise UsageError(
                "this Keras model uses VGG16's Caffe preprocessing (BGR, fixed channel means): "
                "--mean/--std do not apply, only --size"
            )
        return info.replace(preprocess=CaffePreprocess(hw or prep.size))
    if prep is not None and not isinstance(prep, Preprocess):
        raise UsageError("the model's preprocessing is a custom function: --size/--mean/--std cannot change it")
    base = prep if isinstance(prep, Preprocess) else Preprocess()
    return info.replace(
        preprocess=Preprocess(
            hw if hw is not None else base.size,
            tuple(mean) if mean is not None else base.mean,
            tuple(std) if std is not None else base.std,
        )
    )


def random_note(info: ModelInfo) -> str:
    """``info``'s frame note with ``RANDOM WEIGHTS`` added (once)."""
    return f"{info.note}, {RANDOM_NOTE}" if info.note and RANDOM_NOTE not in info.note else RANDOM_NOTE


# --------------------------------------------------------------------------- other people's models


def require(package: str, spec_prefix: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as e:
        pip = PIP_NAMES.get(spec_prefix, package)
        missing = f" (missing: {e.name})" if e.name and e.name != package else ""
        raise UsageError(
            f"{spec_prefix}: models need the {pip!r} package, which is not installed{missing}; pip install {pip}"
        ) from None


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator for a package's own initialisation, then restore it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def from_file(build: Callable[[], Any], path: Any, seed: int) -> Any:
    """The architecture built without weights, then ``path``'s state dict (checked first).

    On the ``meta`` device (no wasted init) unless the model has non-persistent buffers,
    whose values only its constructor knows."""
    from layerscope.models.weights import apply_state_dict, read_state_dict

    state = read_state_dict(path)
    model = on_meta(build)
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        with seeded(seed):
            model = build()
        apply_state_dict(model, state, str(path))
        return model
    return materialise(model, state, str(path), None, seed)


def offline_error(what: str, e: BaseException, example: str) -> WeightsError:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 300:
        text = text[:300].rsplit(" ", 1)[0] + " …"
    return WeightsError(
        f"cannot get {what} ({type(e).__name__}: {text}). Offline? Pass a local state dict with --weights PATH "
        f"(weights=PATH){example}, or --weights random"
    )
