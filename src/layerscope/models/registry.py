"""The one loader of the zoo: :func:`load_model` and :func:`build_for_listing` over the
entries of :mod:`layerscope.models._registry` (defined in :mod:`layerscope.models.zoo`).

How a model is built, so that no parameter is initialised for nothing:

* with a weights file, the architecture is laid out on the ``meta`` device (no memory, no
  init), the file is read and checked first (a missing, unsafe or unreachable file fails
  before anything is built), then the parameters are allocated and filled from the file;
* with ``weights="random"`` the parameters are allocated once and initialised once, seeded;
* :func:`build_for_listing` stops at the ``meta`` device: layer names and output shapes
  without any weights (``layerscope layers``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError, WeightsError
from layerscope.info import RANDOM_WEIGHTS, ModelInfo, attach_info
from layerscope.models._build import allocate, materialise, on_meta, random_note, size_hw, with_preprocess
from layerscope.models._registry import ModelEntry, get_entry, keras_names

FRAMEWORKS = ("torch", "keras")


def _is_model_file(name: str) -> bool:
    return str(name).endswith((".keras", ".h5", ".hdf5"))


def _is_external(name: str) -> bool:
    """``module.path:callable`` or ``torchvision:`` / ``timm:`` / ``hf:`` (not a Windows drive)."""
    head, sep, _ = str(name).partition(":")
    return bool(sep) and len(head) > 1


def load_model(
    name: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    framework: str = "torch",
    seed: int = 0,
    trust_model: bool = False,
    size: int | tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Any:
    """Any model layerscope can build, in eval mode, its :class:`~layerscope.info.ModelInfo`
    recorded (read it with :func:`layerscope.info.model_info`).

    Args:
        name: a built-in model (:func:`list_models`); ``"module.path:callable"`` (your own
            model: the callable is called with no arguments); ``"torchvision:resnet50"``,
            ``"timm:vit_base_patch16_224"``, ``"hf:<repo id or local folder>"`` (needs that
            package); for Keras also a ``.keras`` (or legacy ``.h5``) model file.
        weights: ``None`` for the model's default (:data:`DEFAULT_WEIGHTS`; the package's
            pretrained weights for ``torchvision:``/``timm:``/``hf:``; as built for
            ``module:callable``); ``"imagenet"`` (published weights, downloaded once,
            checked, cached; offline, an error that says how to pass a file); ``"default"``;
            ``"random"`` (seeded, and every explanation says so); or a path to a state dict
            (``.safetensors``, ``.pth`` read with ``weights_only=True``; Keras:
            ``.weights.h5``/``.h5`` too), keys and shapes checked.
        framework: ``"torch"`` or ``"keras"`` (the Keras twins of ``vgg16`` and
            ``vgg16-cifar10``, and ``.keras`` files).
        seed: the seed of random weights.
        trust_model: allow a ``.keras`` file with ``Lambda`` layers, or an ``hf:`` model whose
            config asks for its own code (``auto_map``): both run Python code.
        size: the input size, one number or ``(height, width)``, replacing the model's own.
        mean, std: per-channel normalisation (0..1 scale) replacing the model's own.

    Raises:
        UsageError: unknown name, wrong framework, a package that is not installed.
        WeightsError: weights missing (offline), unsafe, or not fitting (keys and shapes named).
    """
    name = os.fspath(name)
    if framework not in FRAMEWORKS:
        raise UsageError(f"unknown framework {framework!r}; expected 'torch' or 'keras'")
    if framework == "keras":
        model, info = _load_keras(name, weights, seed, trust_model, size_hw(size))
    else:
        if trust_model and not name.startswith("hf:"):
            raise UsageError("--trust-model applies to Keras model files only (--framework keras), and to hf: models")
        if _is_external(name):
            from layerscope.models import external

            model, info = external.load(name, weights, seed=seed, trust_model=trust_model, size=size_hw(size))
        else:
            model, info = _load_torch(get_entry(name), weights, seed)
    info = with_preprocess(info, size, mean, std)
    return attach_info(model if framework == "keras" else model.eval(), info)


def _load_keras(
    name: str, weights: Any, seed: int, trust_model: bool, size: tuple[int, int] | None
) -> tuple[Any, ModelInfo]:
    from layerscope.models import keras_zoo

    if _is_model_file(name):
        if weights not in (None, "imagenet", "default"):
            raise UsageError("--weights does not apply to a model file: its weights are inside it")
        model = keras_zoo.load_model_file(name, trust_model=trust_model)
        return model, keras_zoo.file_info(model)
    if trust_model:
        raise UsageError("--trust-model applies to Keras model files only (a .keras path)")
    entry = _keras_entry(name)
    return keras_zoo.load_builtin(entry, weights, seed=seed, size=size or (224, 224))


def _keras_entry(name: str) -> ModelEntry:
    """The entry of a built-in model with a Keras twin (else the error that lists them)."""
    from layerscope.models._registry import ENTRIES

    entry = ENTRIES.get(name)
    if entry is None or entry.keras is None:
        other = " (PyTorch only)" if entry is not None or _is_external(name) else ""
        raise UsageError(
            f"unknown Keras model {name!r}{other}. Keras models: {', '.join(keras_names())}, or a path to a .keras file"
        )
    return entry


def _load_torch(entry: ModelEntry, weights: Any, seed: int) -> tuple[Any, ModelInfo]:
    from layerscope.models.weights import read_state_dict

    w = entry.default_weights if weights in (None, "default") else weights
    info = entry.info()
    if w == "random":
        model = materialise(on_meta(entry.build), None, "random", entry.init, seed)
        return model, info.replace(warning=RANDOM_WEIGHTS, note=random_note(info))
    if isinstance(w, str) and w in entry.published:
        path = entry.published[w]()  # downloads (or fails) before anything is built
    elif isinstance(w, str) and w.isidentifier() and not Path(w).exists():
        named = ", ".join([*entry.published, "random"])
        raise UsageError(f"{entry.name} has no {w!r} weights; use {named} or a path to a weights file")
    else:
        path = Path(w)
    state = read_state_dict(path)
    try:
        part = entry.partial(state) if entry.partial is not None else None
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    if entry.partial is not None and part is not None:
        model = materialise(on_meta(entry.build), part, str(path), entry.init, seed)
        from layerscope.models.classes import UNTRAINED_HEAD, UNTRAINED_HEAD_NOTE

        return model, info.replace(warning=UNTRAINED_HEAD, note=UNTRAINED_HEAD_NOTE)
    return materialise(on_meta(entry.build), state, str(path), None, seed), info


def build_for_listing(
    name: str | os.PathLike[str],
    framework: str = "torch",
    size: int | tuple[int, int] | None = None,
    device: str = "cpu",
    trust_model: bool = False,
) -> Any:
    """The model's architecture without its weights, for listing its layers and output shapes
    (``layerscope layers``): nothing is downloaded, read or randomly initialised.

    A torch model is laid out on the ``meta`` device and, with ``device="cpu"`` (default),
    given all-zero tensors (a memset: shapes come from a forward pass of a zero image);
    ``device="meta"`` keeps it there (shapes without any memory, for code that runs it on a
    ``meta`` input). A Keras model is built with Keras' own random initialisation. Its
    :class:`~layerscope.info.ModelInfo` is recorded as :func:`load_model` does.
    ``trust_model`` as in :func:`load_model` (``hf:`` models with their own code).
    """
    name = os.fspath(name)
    if framework == "keras":
        if _is_model_file(name):
            return load_model(name, framework="keras")
        entry = _keras_entry(name)
        from layerscope.models import keras_zoo

        model, info = keras_zoo.load_builtin(entry, None, size=size_hw(size) or (224, 224), listing=True)
        return attach_info(model, with_preprocess(info, size))
    if framework != "torch":
        raise UsageError(f"unknown framework {framework!r}; expected 'torch' or 'keras'")
    if _is_external(name):
        from layerscope.models import external

        model, info = external.load(name, None, seed=0, listing=True, trust_model=trust_model, size=size_hw(size))
    else:
        entry = get_entry(name)
        model, info = on_meta(entry.build), entry.info()
    if device != "meta" and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        import torch

        model = allocate(model, device)
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                t.zero_()
    return attach_info(model.eval(), with_preprocess(info, size))
