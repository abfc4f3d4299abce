"""Keras 3 built-in models: the notebook recipe and VGG16, safe loading of ``.keras`` files
and weight files, and torch ↔ Keras weight conversion.

The recipe: ``keras.applications.VGG16(include_top=False)`` (ImageNet weights) nested in a
model that adds ``GlobalAveragePooling2D``, ``Dense(1024, relu)`` and ``Dense(10, softmax)``;
inputs are 224×224 RGB images passed through ``vgg16.preprocess_input`` ("caffe" style:
RGB → BGR, then the ImageNet channel means subtracted; :class:`CaffePreprocess`).

Like the torch zoo, every model carries the attributes layerscope reads: ``class_names``,
``layerscope_preprocess`` (here a callable), ``layerscope_outputs`` and
``layerscope_warning`` (random weights, an untrained head).

Everything here runs on any Keras backend. Nothing is unpickled; ``.keras`` files load with
``safe_mode=True`` and a model holding a ``Lambda`` layer is refused before it is built unless
the caller trusts the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError, WeightsError
from layerscope.models import CIFAR10_CLASSES, RANDOM_WEIGHTS, imagenet_classes

#: Keras' published VGG16 ImageNet weights without the classifier (what the recipe loads).
VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
#: ... and with it (the 1000-class ImageNet VGG16).
VGG16_TOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5"
)
#: ``vgg16.preprocess_input``'s channel means, in BGR order.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

KERAS_MODELS = {
    "vgg16": "VGG16 (ImageNet, 1000 classes): keras.applications.VGG16",
    "vgg16-cifar10": "the notebook recipe: keras.applications.VGG16 base (no top) + GlobalAveragePooling2D "
    "+ Dense(1024, relu) + Dense(10, softmax)",
}

UNTRAINED_HEAD = (
    "the CIFAR-10 head of vgg16-cifar10 is untrained (random weights): its class and maps mean "
    "nothing; train it with `layerscope train-head` and pass the file it writes with --weights PATH"
)

#: The recipe's layer names (the base is nested under ``vgg16``).
RECIPE_BASE = "vgg16"
RECIPE_HEAD = ("global_average_pooling2d", "dense", "predictions")


def _keras() -> Any:
    try:
        import keras
    except ImportError:
        raise UsageError("Keras 3 is not installed: pip install 'layerscope[keras]' (and a backend)") from None
    if not keras.__version__.startswith("3"):
        raise UsageError(f"layerscope needs Keras 3; this is Keras {keras.__version__}")
    return keras


# --------------------------------------------------------------------------- preprocessing


def caffe_preprocess(x: np.ndarray) -> np.ndarray:
    """``keras.applications.vgg16.preprocess_input`` for channels-last RGB in 0..255:
    RGB → BGR, then the ImageNet channel means (:data:`CAFFE_MEAN_BGR`) subtracted."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32))


@dataclass(frozen=True)
class CaffePreprocess:
    """uint8 RGB images → the recipe's input: bilinear resize to ``size`` = ``(H, W)``, then
    :func:`caffe_preprocess`. Returns ``(N, H, W, 3)`` float32 (channels last, BGR)."""

    size: tuple[int, int] | None = (224, 224)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        out = []
        for img in images:
            if self.size is not None and img.shape[:2] != tuple(self.size):
                img = np.asarray(Image.fromarray(img).resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR))
            out.append(img)
        if len({a.shape for a in out}) > 1:
            raise UsageError(f"images of different sizes {sorted({a.shape for a in out})} cannot form one batch")
        return caffe_preprocess(np.stack(out))


# --------------------------------------------------------------------------- models


def _decorate(model: Any, **attrs: Any) -> Any:
    """Set layerscope's attributes without Keras tracking them (they are not weights)."""
    for k, v in attrs.items():
        object.__setattr__(model, k, v)
    return model


def build_recipe(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    classes: int = 10,
    hidden: int = 1024,
    base_weights: str | None = None,
) -> Any:
    """The recipe's architecture: VGG16 base (nested, named ``vgg16``) + GAP + Dense + Dense.

    Args:
        input_shape: ``(H, W, 3)``; VGG16 needs at least 32×32.
        classes: outputs of the softmax layer.
        hidden: units of the ReLU layer.
        base_weights: ``None`` (Keras' own random init) or ``"imagenet"`` (downloaded by
            ``keras.applications``; an error naming the file to pass when offline).
    """
    keras = _keras()
    from keras import layers

    if base_weights == "imagenet":
        base = _vgg16_imagenet(include_top=False, input_shape=input_shape)
    else:
        base = keras.applications.VGG16(include_top=False, weights=None, input_shape=input_shape)
    inputs = keras.Input(input_shape, name="input_layer")
    x = base(inputs)
    x = layers.GlobalAveragePooling2D(name=RECIPE_HEAD[0])(x)
    x = layers.Dense(hidden, activation="relu", name=RECIPE_HEAD[1])(x)
    outputs = layers.Dense(classes, activation="softmax", name=RECIPE_HEAD[2])(x)
    return keras.Model(inputs, outputs, name="vgg16_cifar10")


def _vgg16_imagenet(include_top: bool, input_shape: tuple[int, int, int] | None) -> Any:
    keras = _keras()
    url = VGG16_TOP_URL if include_top else VGG16_NOTOP_URL
    name = url.rsplit("/", 1)[-1]
    try:
        return keras.applications.VGG16(include_top=include_top, weights="imagenet", input_shape=input_shape)
    except Exception as e:  # keras.utils.get_file raises a bare Exception when offline
        raise WeightsError(
            f"cannot get Keras' VGG16 ImageNet weights ({type(e).__name__}: {str(e).splitlines()[0][:160]}). "
            f"Offline? Pass the local file with --weights PATH (weights=PATH): {name} from {url}; "
            "or --weights random"
        ) from None


def init_random_(model: Any, seed: int = 0) -> None:
    """Seeded weights the same on every backend: He-normal convolutions (fan-out, as torch's
    VGG), N(0, 0.01) dense kernels, zero biases."""
    rng = np.random.default_rng(seed)
    kl = _keras().layers
    for _, layer in _leaves(model):
        if isinstance(layer, kl.Conv2D):
            k = layer.kernel
            kh, kw, _, cout = k.shape
            kernel = rng.normal(0.0, (2.0 / (kh * kw * cout)) ** 0.5, size=k.shape)
        elif isinstance(layer, kl.Dense):
            kernel = rng.normal(0.0, 0.01, size=layer.kernel.shape)
        else:
            continue
        values = [kernel.astype(np.float32)]
        if layer.bias is not None:
            values.append(np.zeros(layer.bias.shape, np.float32))
        layer.set_weights(values)


def load_model(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    trust_model: bool = False,
    input_size: int | tuple[int, int] = 224,
    seed: int = 0,
) -> Any:
    """A Keras built-in model, or a ``.keras`` / ``.h5`` model file, ready to explain.

    Args:
        name: ``"vgg16-cifar10"`` (the recipe), ``"vgg16"`` (ImageNet, 1000 classes), or a
            path to a ``.keras`` (or legacy ``.h5``) model file.
        weights: for the built-in models: ``None``/``"imagenet"`` (Keras' published file,
            downloaded once and cached; offline, an error names the file to pass),
            ``"random"`` (seeded), or a path: a legacy ``.h5`` or Keras 3 ``.weights.h5``
            file of the whole model or of the VGG16 base alone, or a torch state dict
            (``.safetensors``/``.pth``) of layerscope's torch model of the same name
            (converted). A base alone leaves the recipe's head untrained (a warning says so).
        trust_model: allow a model file with ``Lambda`` layers (arbitrary Python code).
        input_size: the recipe's input size (224 as in the recipe; VGG16 needs ≥ 32).
        seed: the seed of random weights.

    Raises:
        UsageError: unknown model name, Keras missing.
        WeightsError: weights missing (offline), unsafe, or not fitting (layer and both shapes named).
    """
    p = str(name)
    if p.endswith((".keras", ".h5", ".hdf5")):
        if weights not in (None, "imagenet", "default"):
            raise UsageError("--weights does not apply to a model file: its weights are inside it")
        return load_model_file(p, trust_model=trust_model)
    if name not in KERAS_MODELS:
        from layerscope.models import MODELS

        other = " (PyTorch only)" if name in MODELS else ""
        raise UsageError(
            f"unknown Keras model {name!r}{other}. Keras models: {', '.join(KERAS_MODELS)}, or a path to a .keras file"
        )
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    shape = (*size, 3)
    w = "imagenet" if weights in (None, "default") else weights
    warning = None
    if name == "vgg16":
        keras = _keras()
        if w == "imagenet":
            model = _vgg16_imagenet(include_top=True, input_shape=shape)
        else:
            model = keras.applications.VGG16(include_top=True, weights=None, input_shape=shape)
            init_random_(model, seed)
            if w == "random":
                warning = RANDOM_WEIGHTS
            else:
                load_weights(model, w)
        classes: tuple[str, ...] = imagenet_classes()
    else:
        model = build_recipe(shape, base_weights="imagenet" if w == "imagenet" else None)
        init_random_(model if w != "imagenet" else _head(model), seed)
        if w == "imagenet":
            warning = UNTRAINED_HEAD
        elif w == "random":
            warning = RANDOM_WEIGHTS
        elif load_weights(model, w, base=model.get_layer(RECIPE_BASE)) == "base":
            warning = UNTRAINED_HEAD
        classes = CIFAR10_CLASSES
    return _decorate(
        model,
        class_names=classes,
        layerscope_preprocess=CaffePreprocess(size),
        layerscope_outputs="probabilities",
        layerscope_warning=warning,
    )


class _HeadView:
    """The recipe's head layers, for :func:`init_random_`."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers


def _head(model: Any) -> Any:
    return _HeadView([model.get_layer(n) for n in RECIPE_HEAD])


# --------------------------------------------------------------------------- model files


def _find_lambdas(config: Any) -> list[str]:
    found: list[str] = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            inner = config.get("config") or {}
            found.append(str(inner.get("name", "lambda")) if isinstance(inner, dict) else "lambda")
        for v in config.values():
            found += _find_lambdas(v)
    elif isinstance(config, list):
        for v in config:
            found += _find_lambdas(v)
    return found


def _model_config(path: Path) -> Any:
    """The architecture JSON of a ``.keras`` zip or a legacy ``.h5`` model, read without building."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise WeightsError(f"{path}: holds no model (weights only?); pass it with --weights")
            return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except WeightsError:
        raise
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{path}: not a readable Keras model file ({type(e).__name__}: {e})") from None


def load_model_file(path: str | os.PathLike[str], trust_model: bool = False) -> Any:
    """Load a ``.keras`` (or legacy ``.h5``) model safely.

    The architecture is read first, without building anything: a ``Lambda`` layer (which runs
    arbitrary Python code) is refused unless ``trust_model``. Loading then uses Keras'
    ``safe_mode=True`` (``False`` only when trusted).

    Raises:
        WeightsError: missing, unreadable or refused file.
    """
    keras = _keras()
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such model file")
    lambdas = _find_lambdas(_model_config(p))
    if lambdas and not trust_model:
        raise WeightsError(
            f"{p}: refused: layer {lambdas[0]!r} is a Lambda layer, which runs arbitrary Python code when "
            "loaded; if you trust this file, pass --trust-model (trust_model=True)"
        )
    try:
        model = keras.saving.load_model(str(p), compile=False, safe_mode=not trust_model)
    except Exception as e:  # Keras raises many types for a bad file
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "safe_mode" in str(e):
            text += " (pass --trust-model / trust_model=True only if you trust this file)"
        raise WeightsError(f"{p}: cannot load the Keras model: {text}") from None
    return _decorate(model, layerscope_warning=None)


# --------------------------------------------------------------------------- weight files


def _leaves(model: Any) -> list[tuple[str, Any]]:
    """Layers with their own weights and no sub-layers, in forward order."""
    from layerscope.capture.keras import _children

    out: list[tuple[str, Any]] = []

    def visit(layer: Any, prefix: str) -> None:
        kids = _children(layer) if not isinstance(layer, _HeadView) else layer.layers
        for child in kids:
            path = f"{prefix}/{child.name}" if prefix else child.name
            if _children(child):
                visit(child, path)
            elif child.weights:
                out.append((path, child))

    visit(model, "")
    return out


def _snake(name: str) -> str:
    try:
        from keras.src.utils.naming import to_snake_case

        return to_snake_case(name)
    except ImportError:  # pragma: no cover - the same rule
        s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
        return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _keras3_layout(model: Any) -> list[tuple[str, Any]]:
    """``(group path, layer)`` of each weighted layer as Keras 3 writes a ``.weights.h5``
    (``layers/<snake_case class>[_<n>]/vars``, nested models under their own ``layers``)."""
    keras = _keras()
    out: list[tuple[str, Any]] = []

    def visit(container: Any, prefix: str) -> None:
        used: dict[str, int] = {}
        for layer in container.layers:
            key = _snake(type(layer).__name__)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            path = f"{prefix}layers/{key}"
            if isinstance(layer, keras.Model):
                visit(layer, path + "/")
            elif layer.weights:
                out.append((path + "/vars", layer))

    visit(model, "")
    return out


def _read_weights_file(path: Path) -> tuple[str, Any]:
    """``("keras3", {group: [arrays]})`` or ``("legacy", [(layer name, [arrays])])``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in root.attrs:
                layers = []
                for raw in root.attrs["layer_names"]:
                    ln = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                    g = root[ln]
                    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in g.attrs["weight_names"]]
                    owners: dict[str, list[np.ndarray]] = {}
                    for wn in names:
                        owner = wn.split("/")[-2] if "/" in wn else ln
                        owners.setdefault(owner, []).append(np.asarray(g[wn]))
                    layers.extend(owners.items())
                return "legacy", layers
            groups: dict[str, list[np.ndarray]] = {}

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
                    keys = sorted(obj, key=lambda k: int(k) if k.isdigit() else 1 << 30)
                    groups[name] = [np.asarray(obj[k]) for k in keys]

            root.visititems(visit)
            if not groups:
                raise WeightsError(f"{path}: holds no Keras weights")
            return "keras3", groups
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable Keras weights file ({type(e).__name__}: {e})") from None


def _shape_problems(pairs: list[tuple[str, Any, list[np.ndarray]]], source: str) -> None:
    problems = []
    for label, layer, arrays in pairs:
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if want != got:
            problems.append(f"layer {label}: file {_fmt(got)} vs model {_fmt(want)}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(problems[:3]) + more)


def _fmt(shapes: list[tuple[int, ...]]) -> str:
    return " + ".join(str(s) for s in shapes) if shapes else "(no weights)"


def load_weights(model: Any, path: str | os.PathLike[str], base: Any = None) -> str:
    """Load a weights file into ``model`` (or, if it holds only the base, into ``base``).

    Accepts Keras' legacy ``.h5`` (matched layer by layer in order, like Keras does), Keras 3
    ``.weights.h5`` (matched by Keras' own layout), and a torch ``.safetensors``/``.pth``
    state dict (converted with :func:`torch_to_keras_weights`). Every shape is checked before
    any weight is set: a file that does not fit changes nothing and names the layer and both
    shapes.

    Returns:
        ``"full"`` or ``"base"``: what was loaded.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file")
    if p.suffix in (".safetensors", ".pth", ".pt"):
        state = _read_torch_state(p)
        if base is not None and len(_torch_groups(state)) == len(_leaves(base)):
            torch_to_keras_weights(state, base, source=str(p))
            return "base"
        torch_to_keras_weights(state, model, source=str(p))
        return "full"
    if p.suffix == ".keras":
        raise WeightsError(f"{p}: a whole model, not a weights file; pass it as the model (--model {p})")
    fmt, data = _read_weights_file(p)
    if fmt == "legacy":
        for kind, target in [("full", model)] + ([("base", base)] if base is not None else []):
            leaves = _leaves(target)
            if len(leaves) == len(data):
                pairs = [
                    (name if name == layer.name else f"{layer.name} (file: {name})", layer, arrays)
                    for (_, layer), (name, arrays) in zip(leaves, data, strict=True)
                ]
                _shape_problems(pairs, str(p))
                for _, layer, arrays in pairs:
                    layer.set_weights(arrays)
                return kind
        counts = f"{len(_leaves(model))}" + (f" (or {len(_leaves(base))} for the base)" if base is not None else "")
        raise WeightsError(
            f"{p} does not fit the model: it holds {len(data)} layers with weights; the model has {counts}"
        )
    for kind, target in [("full", model)] + ([("base", base)] if base is not None else []):
        layout = _keras3_layout(target)
        if all(key in data for key, _ in layout):
            pairs = [(layer.name, layer, data[key]) for key, layer in layout]
            _shape_problems(pairs, str(p))
            for _, layer, arrays in pairs:
                layer.set_weights(arrays)
            return kind
    missing = [layer.name for key, layer in _keras3_layout(model) if key not in data]
    raise WeightsError(f"{p} does not fit the model: no weights for layer(s) {', '.join(missing[:5])}")


def save_weights(model: Any, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Save the whole model's weights as a Keras ``.weights.h5``, atomically."""
    from layerscope import outputs

    p = outputs.check_writable(path, overwrite)
    if not p.name.endswith(".weights.h5"):
        raise UsageError(f"{p}: Keras weights are saved as .weights.h5")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part.weights.h5", dir=p.parent)
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return p


# --------------------------------------------------------------------------- torch ↔ Keras


def _read_torch_state(p: Path) -> dict[str, np.ndarray]:
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            state = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{p}: not a readable safetensors file: {e}") from None
        return {k: state[k] for k in sorted(state, key=_module_order)}  # safetensors sorts keys by name
    from layerscope.models.weights import read_state_dict  # .pth needs torch (weights_only=True)

    return {k: v.detach().cpu().numpy() for k, v in read_state_dict(p).items()}


def _module_order(key: str) -> tuple[Any, ...]:
    """Torch module order for the keys of layerscope's VGG models: ``features`` first, then
    numbers compared as numbers (``features.2`` before ``features.10``)."""
    parts = tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in key.split("."))
    return (not key.startswith("features."), parts)


def _as_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float32)


def _torch_groups(state: Mapping[str, Any]) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(module, weight, bias)`` per conv/linear module with a weight, in state-dict order."""
    groups: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for key, value in state.items():
        if key.endswith(".weight") and np.ndim(value) in (2, 4):
            mod = key[: -len(".weight")]
            bias = state.get(mod + ".bias")
            groups.append((mod, _as_numpy(value), None if bias is None else _as_numpy(bias)))
    return groups


def torch_to_keras_weights(state_dict: Mapping[str, Any], model: Any, *, source: str = "the state dict") -> list[str]:
    """Load a torch state dict into the matching Keras model, layer by layer in order.

    Convolution kernels go from torch's ``(out, in, kh, kw)`` (OIHW) to Keras' ``(kh, kw, in,
    out)`` (HWIO); dense kernels are transposed; a dense layer right after ``Flatten`` of a
    feature map gets its input rows reordered from torch's ``(C, h, w)`` flattening to Keras'
    ``(h, w, C)``. Works with numpy arrays or torch tensors (torch is not imported).

    Returns:
        The names of the Keras layers set.

    Raises:
        WeightsError: a different number of layers, or a shape that does not fit (both named).
    """
    kl = _keras().layers
    groups = _torch_groups(state_dict)
    leaves = [layer for _, layer in _leaves(model)]
    if len(groups) != len(leaves):
        raise WeightsError(
            f"{source} does not fit {model.name}: {len(groups)} conv/linear weights in the file, "
            f"{len(leaves)} layers with weights in the model"
        )
    order = [layer for _, layer in _all_layers(model)]
    values: list[tuple[Any, list[np.ndarray]]] = []
    problems = []
    channels = None
    for (mod, w, b), layer in zip(groups, leaves, strict=True):
        if isinstance(layer, kl.Conv2D) and w.ndim == 4:
            kernel = w.transpose(2, 3, 1, 0)
            channels = w.shape[0]
        elif isinstance(layer, kl.Dense) and w.ndim == 2:
            kernel = w.T
            i = order.index(layer)
            after_flatten = i > 0 and isinstance(order[i - 1], kl.Flatten)
            if after_flatten and channels and w.shape[1] != channels and w.shape[1] % channels == 0:
                hw = w.shape[1] // channels
                kernel = w.reshape(w.shape[0], channels, hw).transpose(0, 2, 1).reshape(w.shape[0], -1).T
        else:
            problems.append(f"{mod} ({w.ndim}-D) cannot go into {type(layer).__name__} layer {layer.name}")
            continue
        arrays = [np.ascontiguousarray(kernel)] + ([b] if b is not None else [])
        want = [tuple(x.shape) for x in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if want != got:
            problems.append(f"{mod} → layer {layer.name}: file {_fmt(got)} vs model {_fmt(want)}")
        values.append((layer, arrays))
    if problems:
        raise WeightsError(f"{source} does not fit {model.name}: " + "; ".join(problems[:3]))
    for layer, arrays in values:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in values]


def keras_to_torch_weights(model: Any, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The inverse of :func:`torch_to_keras_weights`: the Keras model's weights as a torch
    state dict with the given parameter ``keys`` (e.g. ``torch_model.state_dict().keys()``),
    paired in order. Kernels go from HWIO to OIHW."""
    kl = _keras().layers
    mods = [k[: -len(".weight")] for k in keys if k.endswith(".weight")]
    leaves = [layer for _, layer in _leaves(model)]
    if len(mods) != len(leaves):
        raise WeightsError(f"{len(mods)} torch modules with weights, {len(leaves)} Keras layers with weights")
    order = [layer for _, layer in _all_layers(model)]
    out: dict[str, np.ndarray] = {}
    channels = None
    for mod, layer in zip(mods, leaves, strict=True):
        arrays = layer.get_weights()
        if isinstance(layer, kl.Conv2D):
            w = arrays[0].transpose(3, 2, 0, 1)
            channels = w.shape[0]
        elif isinstance(layer, kl.Dense):
            w = arrays[0].T
            i = order.index(layer)
            if i > 0 and isinstance(order[i - 1], kl.Flatten) and channels and w.shape[1] % channels == 0:
                hw = w.shape[1] // channels
                if hw > 1:
                    w = w.reshape(w.shape[0], hw, channels).transpose(0, 2, 1).reshape(w.shape[0], -1)
        else:
            raise WeightsError(f"layer {layer.name}: {type(layer).__name__} has no torch counterpart here")
        out[f"{mod}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
        if len(arrays) > 1:
            out[f"{mod}.bias"] = np.asarray(arrays[1], dtype=np.float32)
    return out


def _all_layers(model: Any) -> list[tuple[str, Any]]:
    from layerscope.capture.keras import walk

    return walk(model)


# --------------------------------------------------------------------------- training the head


def train_head(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train the recipe's head (Dense 1024 → Dense 10) on CIFAR-10 with the VGG16 base frozen.

    Each step takes a random batch, runs the frozen base (inference only) to its pooled
    512-d features, and takes one Adam step on the head. The base's weights never change.

    Args:
        model: a recipe model from :func:`load_model` (``"vgg16-cifar10"``).
        images: uint8 ``(N, 32, 32, 3)`` training images; labels: ``(N,)``.
        steps: optimisation steps; batch_size, learning_rate, seed: as named.
        log: called as ``log(step, loss, accuracy)`` after each step.

    Returns:
        The loss of each step.
    """
    keras = _keras()
    if steps <= 0:
        raise UsageError(f"the number of steps must be positive, not {steps}")
    try:
        gap = model.get_layer(RECIPE_HEAD[0])
        head_layers = [model.get_layer(n) for n in RECIPE_HEAD[1:]]
    except ValueError:
        raise UsageError("train_head needs the recipe model (load_model('vgg16-cifar10', framework='keras'))") from None
    preprocess = getattr(model, "layerscope_preprocess", None) or CaffePreprocess()
    features = keras.Model(model.inputs, gap.output)
    head = keras.Sequential([keras.Input((gap.output.shape[-1],)), *head_layers])
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(1, steps + 1):
        idx = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
        x = preprocess(list(images[idx]))
        f = np.asarray(keras.ops.convert_to_numpy(features(x, training=False)))
        y = np.asarray(labels[idx], dtype=np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = float(np.asarray(head.train_on_batch(f, y)).reshape(-1)[0])
        acc = float((np.asarray(keras.ops.convert_to_numpy(head(f, training=False))).argmax(1) == y).mean())
        losses.append(loss)
        if log is not None:
            log(step, loss, acc)
    object.__setattr__(model, "layerscope_warning", None)
    return losses
