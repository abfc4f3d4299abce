"""The zoo as a registry: one :class:`ModelEntry` per built-in model, and the one loader.

Adding a model is one entry: its architecture (a torch module built without weights), its
seeded random initialisation, its :class:`~layerscope.info.ModelInfo`, its default and
published weights, and, where it has one, its Keras twin.

How a model is built, so that no parameter is initialised for nothing:

* with a weights file, the architecture is laid out on the ``meta`` device (no memory, no
  init), the file is read and checked first (a missing, unsafe or unreachable file fails
  before anything is built), then the parameters are allocated and filled from the file;
* with ``weights="random"`` the parameters are allocated once and initialised once, seeded;
* :func:`build_for_listing` stops at the ``meta`` device: layer names and output shapes
  without any weights (``layerscope layers``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError, WeightsError
from layerscope.info import RANDOM_WEIGHTS, ModelInfo, attach_info
from layerscope.inputs import CaffePreprocess, Preprocess

FRAMEWORKS = ("torch", "keras")
#: The note drawn on the frames of a model with random weights.
RANDOM_NOTE = "RANDOM WEIGHTS"


@dataclass(frozen=True)
class ModelEntry:
    """One built-in model.

    Attributes:
        name: what :func:`load_model` is called with.
        description: one line for listings.
        build: the torch architecture, without meaningful weights (called on the ``meta``
            device when weights are loaded from a file).
        init: ``init(model, seed)``: seeded random weights, in place (buffers included).
        info: the model's facts with trained weights.
        default_weights: the weights used when none are named.
        published: named weights (``"imagenet"``, ``"default"``) → a function returning the
            local file (downloading it once, checked, when needed).
        partial: for a file that holds only part of the model (the recipe's conv base): the
            part to load, or ``None`` when the file is meant to be whole. The rest keeps its
            random weights and the info says the head is untrained.
        keras: ``keras(weights, seed, size) -> (model, info)``, the Keras twin, if any.
    """

    name: str
    description: str
    build: Callable[[], Any]
    init: Callable[[Any, int], None]
    info: Callable[[], ModelInfo]
    default_weights: str = "imagenet"
    published: Mapping[str, Callable[[], Path]] = field(default_factory=dict)
    partial: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    keras: Callable[..., tuple[Any, ModelInfo]] | None = None


# --------------------------------------------------------------------------- the entries


def _vgg16() -> Any:
    from layerscope.models.vgg import VGG16

    return VGG16()


def _vgg16_cifar10() -> Any:
    from layerscope.models.vgg import VGG16GAPHead

    return VGG16GAPHead()


def _init_vgg(model: Any, seed: int) -> None:
    from layerscope.models.vgg import init_vgg_

    init_vgg_(model, seed)


def _vgg16_info() -> ModelInfo:
    from layerscope.models.classes import imagenet_classes
    from layerscope.models.vgg import vgg16_layers

    return ModelInfo(
        name="vgg16", layers=vgg16_layers(), class_names=imagenet_classes(), preprocess=Preprocess(), output="logits"
    )


def _recipe_info() -> ModelInfo:
    from layerscope.models.classes import CIFAR10_CLASSES
    from layerscope.models.vgg import vgg16_layers

    return ModelInfo(
        name="vgg16-cifar10",
        layers=vgg16_layers(),
        class_names=CIFAR10_CLASSES,
        preprocess=Preprocess(),
        output="probabilities",
    )


def _vgg16_imagenet_file() -> Path:
    from layerscope.models import weights

    return weights.download_torchvision(weights.VGG16_IMAGENET_URL)


def _recipe_base(state: dict[str, Any]) -> dict[str, Any] | None:
    """A file without the recipe's head (``head.*``): its conv base (``features.*``) only."""
    if any(k.startswith("head.") for k in state):
        return None
    base = {k: v for k, v in state.items() if k.startswith("features.")}
    if not base:
        raise WeightsError("the file holds no 'features.*' (VGG16 conv base) weights and no 'head.*' weights")
    return base


def _keras_builtin(name: str) -> Callable[..., tuple[Any, ModelInfo]]:
    def load(weights: Any, seed: int, size: tuple[int, int]) -> tuple[Any, ModelInfo]:
        from layerscope.models import keras_zoo

        return keras_zoo.load_builtin(name, weights, seed=seed, size=size)

    return load


def _demo() -> Any:
    from layerscope.models.demo import DemoNet

    return DemoNet()


def _init_demo(model: Any, seed: int) -> None:
    from layerscope.models.demo import init_demo_

    init_demo_(model, seed)


def _demo_info() -> ModelInfo:
    from layerscope.models import demo

    return demo.info()


def _demo_file() -> Path:
    from layerscope.models import demo

    return demo.shipped_weights()


def _resnet50() -> Any:
    from layerscope.models.resnet import ResNet50

    return ResNet50()


def _init_resnet(model: Any, seed: int) -> None:
    from layerscope.models.resnet import init_resnet_

    init_resnet_(model, seed)


def _resnet50_info() -> ModelInfo:
    from layerscope.models.classes import imagenet_classes
    from layerscope.models.resnet import resnet50_layers

    return ModelInfo(
        name="resnet50",
        layers=resnet50_layers(),
        class_names=imagenet_classes(),
        preprocess=Preprocess(),
        output="logits",
    )


def _resnet50_imagenet_file() -> Path:
    from layerscope.models import weights

    return weights.download_torchvision(weights.RESNET50_IMAGENET_URL)


ENTRIES: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            "demo",
            "a small 13-conv VGG-style net trained by layerscope on its synthetic shapes (96×96, 10 classes)",
            _demo,
            _init_demo,
            _demo_info,
            default_weights="default",
            published={"default": _demo_file},
        ),
        ModelEntry(
            "vgg16",
            "VGG16 (ImageNet, 1000 classes), torchvision-compatible keys",
            _vgg16,
            _init_vgg,
            _vgg16_info,
            published={"imagenet": _vgg16_imagenet_file},
            keras=_keras_builtin("vgg16"),
        ),
        ModelEntry(
            "vgg16-cifar10",
            "the notebook recipe: VGG16 conv base + GAP + Linear(512→1024) + ReLU + Linear(1024→10) + softmax",
            _vgg16_cifar10,
            _init_vgg,
            _recipe_info,
            published={"imagenet": _vgg16_imagenet_file},
            partial=_recipe_base,
            keras=_keras_builtin("vgg16-cifar10"),
        ),
        ModelEntry(
            "resnet50",
            "ResNet-50 (ImageNet, 1000 classes), torchvision-compatible keys; default layers: the 16 blocks",
            _resnet50,
            _init_resnet,
            _resnet50_info,
            published={"imagenet": _resnet50_imagenet_file},
        ),
    )
}

#: ``{name: description}`` of the built-in models.
MODELS: dict[str, str] = {name: e.description for name, e in ENTRIES.items()}
#: The weights each built-in model uses unless told otherwise.
DEFAULT_WEIGHTS: dict[str, str] = {name: e.default_weights for name, e in ENTRIES.items()}


def list_models() -> list[str]:
    """Names accepted by :func:`load_model` (besides ``module:callable``, ``torchvision:``,
    ``timm:``, ``hf:`` names and, for Keras, ``.keras`` files)."""
    return list(ENTRIES)


def get_entry(name: str) -> ModelEntry:
    """The entry of a built-in model; an unknown name lists the close matches."""
    try:
        return ENTRIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, ENTRIES, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown model {name!r}.{hint} Built-in models: {', '.join(ENTRIES)}; or module.path:callable, "
            "torchvision:NAME, timm:NAME, hf:REPO-ID"
        ) from None


# --------------------------------------------------------------------------- building


def on_meta(build: Callable[[], Any]) -> Any:
    """``build()`` with every parameter and buffer on the ``meta`` device: no memory, no init."""
    import torch

    with torch.device("meta"):
        return build()


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
    model = model.to_empty(device="cpu")
    if state is None or partial:
        if init is None:
            raise WeightsError(f"{source}: does not cover the whole model")
        init(model, seed)
    if state is not None:
        apply_state_dict(model, state, source, strict=False)
    return model


def _size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
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
    hw = _size(size)
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
        trust_model: allow a ``.keras`` file with ``Lambda`` layers (they run Python code).
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
        model, info = _load_keras(name, weights, seed, trust_model, _size(size))
    else:
        if trust_model:
            raise UsageError("--trust-model applies to Keras model files only (--framework keras)")
        if _is_external(name):
            from layerscope.models import external

            model, info = external.load(name, weights, seed=seed)
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
    entry = ENTRIES.get(name)
    if entry is None or entry.keras is None:
        keras_names = [n for n, e in ENTRIES.items() if e.keras is not None]
        other = " (PyTorch only)" if entry is not None or _is_external(name) else ""
        raise UsageError(
            f"unknown Keras model {name!r}{other}. Keras models: {', '.join(keras_names)}, or a path to a .keras file"
        )
    return entry.keras(weights, seed, size or (224, 224))


def _load_torch(entry: ModelEntry, weights: Any, seed: int) -> tuple[Any, ModelInfo]:
    from layerscope.models.weights import read_state_dict

    w = entry.default_weights if weights in (None, "default") else weights
    info = entry.info()
    if w == "random":
        model = materialise(on_meta(entry.build), None, "random", entry.init, seed)
        return model, info.replace(warning=RANDOM_WEIGHTS, note=_random_note(info))
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


def _random_note(info: ModelInfo) -> str:
    return f"{info.note}, {RANDOM_NOTE}" if info.note and RANDOM_NOTE not in info.note else RANDOM_NOTE


def build_for_listing(
    name: str | os.PathLike[str],
    framework: str = "torch",
    size: int | tuple[int, int] | None = None,
    device: str = "cpu",
) -> Any:
    """The model's architecture without its weights, for listing its layers and output shapes
    (``layerscope layers``): nothing is downloaded, read or randomly initialised.

    A torch model is laid out on the ``meta`` device and, with ``device="cpu"`` (default),
    given all-zero tensors (a memset: shapes come from a forward pass of a zero image);
    ``device="meta"`` keeps it there (shapes without any memory, for code that runs it on a
    ``meta`` input). A Keras model is built with Keras' own random initialisation. Its
    :class:`~layerscope.info.ModelInfo` is recorded as :func:`load_model` does.
    """
    name = os.fspath(name)
    if framework == "keras":
        if _is_model_file(name):
            return load_model(name, framework="keras")
        entry = ENTRIES.get(name)
        if entry is None or entry.keras is None:
            return load_model(name, "random", framework="keras", size=size)  # the usual error
        from layerscope.models import keras_zoo

        model, info = keras_zoo.load_builtin(name, None, size=_size(size) or (224, 224), listing=True)
        return attach_info(model, with_preprocess(info, size))
    if framework != "torch":
        raise UsageError(f"unknown framework {framework!r}; expected 'torch' or 'keras'")
    if _is_external(name):
        from layerscope.models import external

        model, info = external.load(name, None, seed=0, listing=True)
    else:
        entry = get_entry(name)
        model, info = on_meta(entry.build), entry.info()
    if device != "meta" and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        import torch

        model = model.to_empty(device=device)
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                t.zero_()
    return attach_info(model.eval(), with_preprocess(info, size))
