"""Keras weights and model files: safe loading of ``.keras`` files, Keras' published VGG16
files, ``.h5`` / ``.weights.h5`` weight files, atomic saving, and torch → Keras conversion.

Nothing is unpickled; ``.keras`` files load with ``safe_mode=True`` and a model holding a
``Lambda`` layer is refused before it is built unless the caller trusts the file.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError, WeightsError
from layerscope.models.keras_zoo.architecture import keras_module, leaves

#: Keras' published VGG16 ImageNet weights without the classifier (what the recipe loads).
VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
#: ... and with it (the 1000-class ImageNet VGG16).
VGG16_TOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5"
)
#: The MD5 hashes ``keras.applications`` checks these files against.
VGG16_MD5 = {VGG16_TOP_URL: "64373286793e3c8b2b4e3219cbf3544b", VGG16_NOTOP_URL: "6d6bbae143d832006294945121d1f1fc"}


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` keeps published models: ``$KERAS_HOME/models`` (default
    ``~/.keras/models``; ``/tmp/.keras/models`` when that is not writable), so a file Keras
    downloaded before is found here and the other way round."""
    base = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if not os.access(base if base.exists() else base.parent, os.W_OK):
        base = Path("/tmp") / ".keras"
    return base / "models"


def vgg16_imagenet_file(include_top: bool, timeout: float = 30.0) -> Path:
    """Keras' VGG16 ImageNet weights file, from Keras' cache or downloaded once (MD5 checked,
    written atomically). Offline, one line names the file to pass with ``--weights PATH``.
    Nothing is printed (no "Downloading data from …")."""
    from layerscope.models.weights import download

    url = VGG16_TOP_URL if include_top else VGG16_NOTOP_URL
    name = url.rsplit("/", 1)[-1]
    dst = keras_cache_dir() / name
    try:
        return download(url, dst, hash_prefix=VGG16_MD5[url], algorithm="md5", timeout=timeout)
    except WeightsError as e:
        if "cannot download" not in str(e):
            raise
        raise WeightsError(
            f"cannot get Keras' VGG16 ImageNet weights: {str(e).split(' (', 1)[-1].split(').', 1)[0]}. "
            f"Offline? Pass the local file with --weights PATH (weights=PATH): {name} from {url}; or --weights random"
        ) from None


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
    keras = keras_module()
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
    return model


# --------------------------------------------------------------------------- weight files


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
    keras = keras_module()
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
        if base is not None and len(_torch_groups(state)) == len(leaves(base)):
            torch_to_keras_weights(state, base, source=str(p))
            return "base"
        torch_to_keras_weights(state, model, source=str(p))
        return "full"
    if p.suffix == ".keras":
        raise WeightsError(f"{p}: a whole model, not a weights file; pass it as the model (--model {p})")
    fmt, data = _read_weights_file(p)
    if fmt == "legacy":
        for kind, target in [("full", model)] + ([("base", base)] if base is not None else []):
            found = leaves(target)
            if len(found) == len(data):
                pairs = [
                    (name if name == layer.name else f"{layer.name} (file: {name})", layer, arrays)
                    for (_, layer), (name, arrays) in zip(found, data, strict=True)
                ]
                _shape_problems(pairs, str(p))
                for _, layer, arrays in pairs:
                    layer.set_weights(arrays)
                return kind
        counts = f"{len(leaves(model))}" + (f" (or {len(leaves(base))} for the base)" if base is not None else "")
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
    from layerscope.atomic import atomic_path

    p = Path(path)
    if not p.name.endswith(".weights.h5"):
        raise UsageError(f"{p}: Keras weights are saved as .weights.h5")
    with atomic_path(p, overwrite, suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp), overwrite=True)
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
    kl = keras_module().layers
    groups = _torch_groups(state_dict)
    targets = [layer for _, layer in leaves(model)]
    if len(groups) != len(targets):
        raise WeightsError(
            f"{source} does not fit {model.name}: {len(groups)} conv/linear weights in the file, "
            f"{len(targets)} layers with weights in the model"
        )
    order = [layer for _, layer in _all_layers(model)]
    values: list[tuple[Any, list[np.ndarray]]] = []
    problems = []
    channels = None
    for (mod, w, b), layer in zip(groups, targets, strict=True):
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


def _all_layers(model: Any) -> list[tuple[str, Any]]:
    from layerscope.capture.keras import walk

    return walk(model)
