"""Other people's models by name: your own (``module.path:callable``), torchvision's, timm's and
Hugging Face's, each with its :class:`~layerscope.info.ModelInfo`.

=============================  ===============================================================
name                           built by
=============================  ===============================================================
``my_pkg.models:build``        calling ``my_pkg.models.build()`` (the current folder is also
                               searched, as ``uvicorn main:app`` does)
``torchvision:resnet50``       ``torchvision.models.get_model`` (weights: the package's
                               ``DEFAULT`` weights, downloaded by torch.hub)
``timm:vit_base_patch16_224``  ``timm.create_model`` (``pretrained=True``: the Hugging Face Hub)
``hf:google/vit-base-...``     ``transformers.AutoModelForImageClassification`` (a repo id or a
                               local ``save_pretrained`` folder)
=============================  ===============================================================

Weights: ``None``/``"default"``/``"imagenet"`` → the package's pretrained weights (network the
first time; offline, one line says how to pass a file instead); ``"random"`` → the package's
own initialisation, seeded (torch's global random state is left as it was); a path → a state
dict read safely (``weights_only=True`` / safetensors), keys and shapes checked, loaded into
the architecture built without weights. The preprocessing comes from the package where it has
one (torchvision's weights transforms, timm's data config, a Hugging Face image processor
read from the local cache only), else ImageNet's at 224×224; ``size``/``mean``/``std``
override it.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError, WeightsError
from layerscope.info import RANDOM_WEIGHTS, ModelInfo, model_info
from layerscope.inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocess

PACKAGES = ("torchvision", "timm", "hf")
#: The pip package behind each prefix.
PIP_NAMES = {"torchvision": "torchvision", "timm": "timm", "hf": "transformers"}


def load(spec: str, weights: Any, *, seed: int = 0, listing: bool = False) -> tuple[Any, ModelInfo]:
    """The model named by ``spec`` and its info (see the module); ``listing``: no weights
    needed (the architecture on the ``meta`` device where the package allows)."""
    prefix, _, rest = spec.partition(":")
    if not rest:
        raise UsageError(f"{spec!r}: give a name after the colon, e.g. torchvision:resnet50 or my_module:build")
    kind = _weights_kind(weights)
    if prefix == "torchvision":
        model, info = _torchvision(rest, kind, weights, seed, listing)
    elif prefix == "timm":
        model, info = _timm(rest, kind, weights, seed, listing)
    elif prefix == "hf":
        model, info = _hf(rest, kind, weights, seed, listing)
    else:
        model, info = _callable(spec, kind, weights, listing)
    info = info.replace(name=spec)
    if kind == "random":
        info = info.replace(warning=RANDOM_WEIGHTS, note="RANDOM WEIGHTS")
    return model, info


def _weights_kind(weights: Any) -> str:
    if weights in (None, "default", "imagenet", "pretrained"):
        return "pretrained"
    if weights == "random":
        return "random"
    return "file"


def _require(package: str, spec_prefix: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as e:
        pip = PIP_NAMES.get(spec_prefix, package)
        missing = f" (missing: {e.name})" if e.name and e.name != package else ""
        raise UsageError(
            f"{spec_prefix}: models need the {pip!r} package, which is not installed{missing}; pip install {pip}"
        ) from None


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator for a package's own initialisation, then restore it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _from_file(build: Callable[[], Any], path: Any, seed: int) -> Any:
    """The architecture built without weights, then ``path``'s state dict (checked first).

    On the ``meta`` device (no wasted init) unless the model has non-persistent buffers,
    whose values only its constructor knows."""
    from layerscope.models.registry import materialise, on_meta
    from layerscope.models.weights import apply_state_dict, read_state_dict

    state = read_state_dict(path)
    model = on_meta(build)
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        with _seeded(seed):
            model = build()
        apply_state_dict(model, state, str(path))
        return model
    return materialise(model, state, str(path), None, seed)


def _offline(what: str, e: BaseException, example: str) -> WeightsError:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 300:
        text = text[:300].rsplit(" ", 1)[0] + " …"
    return WeightsError(
        f"cannot get {what} ({type(e).__name__}: {text}). Offline? Pass a local state dict with --weights PATH "
        f"(weights=PATH){example}, or --weights random"
    )


# --------------------------------------------------------------------------- module:callable


def _callable(spec: str, kind: str, weights: Any, listing: bool) -> tuple[Any, ModelInfo]:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise UsageError(f"{spec!r}: expected module.path:callable (e.g. my_models:build)")
    if kind == "random" or weights == "imagenet":
        raise UsageError(
            f"{spec}: your model comes with the weights its callable gives, or a state dict file "
            f"(--weights PATH); --weights {weights} does not apply"
        )
    module = _import_user_module(module_name, spec)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UsageError(f"{spec}: module {module_name!r} has no {attr!r}{hint}") from None
    if not callable(obj):
        raise UsageError(f"{spec}: {attr!r} is a {type(obj).__name__}, not something to call")
    try:
        model = obj()
    except Exception as e:
        raise UsageError(f"{spec}: calling {attr}() failed: {type(e).__name__}: {e}") from e
    import torch

    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{spec}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    info = model_info(model) or ModelInfo()
    if kind == "file" and not listing:
        from layerscope.models.weights import apply_state_dict, read_state_dict

        apply_state_dict(model, read_state_dict(weights), str(weights))
    return model, info


def _import_user_module(name: str, spec: str) -> Any:
    """``import name``; if not found, once more with the current folder on ``sys.path``."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name.split(".")[0]):
            raise UsageError(f"{spec}: importing {name!r} failed: {e}") from e
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name.split(".")[0]):
            raise UsageError(
                f"{spec}: no module named {name!r} (looked in the current folder and on sys.path; "
                "run from the folder that holds it or add that folder to PYTHONPATH)"
            ) from None
        raise UsageError(f"{spec}: importing {name!r} failed: {e}") from e
    except Exception as e:
        raise UsageError(f"{spec}: importing {name!r} failed: {type(e).__name__}: {e}") from e
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


# --------------------------------------------------------------------------- torchvision


def _torchvision(name: str, kind: str, weights: Any, seed: int, listing: bool) -> tuple[Any, ModelInfo]:
    _require("torchvision", "torchvision")
    models = importlib.import_module("torchvision.models")
    available = list(models.list_models())
    if name not in available:
        close = difflib.get_close_matches(name, available, n=4, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"torchvision has no model {name!r}.{hint}")
    default = models.get_model_weights(name).DEFAULT

    def build() -> Any:
        return models.get_model(name, weights=None)

    if listing:
        from layerscope.models.registry import on_meta

        model = on_meta(build)
    elif kind == "pretrained":
        try:
            model = models.get_model(name, weights=default)
        except (OSError, RuntimeError, ValueError) as e:
            url = str(getattr(default, "url", "") or "")
            example = f", e.g. {url.rsplit('/', 1)[-1]} from {url}" if url else ""
            raise _offline(f"torchvision's {name} weights", e, example) from None
    elif kind == "random":
        with _seeded(seed):
            model = build()
    else:
        model = _from_file(build, weights, seed)
    meta = getattr(default, "meta", {}) or {}
    categories = meta.get("categories")
    outputs = _outputs(model)
    prep = None
    with contextlib.suppress(Exception):
        t = default.transforms()
        crop = getattr(t, "crop_size", None)
        h = crop[0] if isinstance(crop, (list, tuple)) else crop
        prep = Preprocess((int(h), int(h)), tuple(t.mean), tuple(t.std))
    return model, ModelInfo(
        layers=_block_layers(model),
        class_names=tuple(categories) if categories and (outputs is None or len(categories) == outputs) else None,
        preprocess=prep,
        output="logits",
    )


def _outputs(model: Any) -> int | None:
    """The number of classes of the model's last linear layer, if it ends in one."""
    import torch

    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    return int(last.out_features) if last is not None else None


def _block_layers(model: Any) -> dict[str, str]:
    """A ResNet-style model's blocks (``layer1.0`` … ``layer4.N``) as its default layers, as
    the built-in ``resnet50``; other models keep the default (every conv layer)."""
    import torch

    names: dict[str, str] = {}
    for i in range(1, 5):
        stage = getattr(model, f"layer{i}", None)
        if not isinstance(stage, torch.nn.Sequential):
            return {}
        names.update({f"layer{i}.{k}": f"layer{i}.{k}" for k in range(len(stage))})
    return names


# --------------------------------------------------------------------------- timm


def _timm(name: str, kind: str, weights: Any, seed: int, listing: bool) -> tuple[Any, ModelInfo]:
    timm = _require("timm", "timm")
    is_model = getattr(timm, "is_model", None)
    if is_model is not None and not is_model(name):
        close = difflib.get_close_matches(name, list(timm.list_models()), n=4, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"timm has no model {name!r}.{hint}")

    def build() -> Any:
        return timm.create_model(name, pretrained=False)

    if listing:
        from layerscope.models.registry import on_meta

        model = on_meta(build)
    elif kind == "pretrained":
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as e:  # timm and the Hub raise many types when offline
            raise _offline(f"timm's pretrained {name}", e, "") from None
    elif kind == "random":
        with _seeded(seed):
            model = build()
    else:
        model = _from_file(build, weights, seed)
    prep = None
    with contextlib.suppress(Exception):
        data = timm.data.resolve_data_config({}, model=model)
        _, h, w = data["input_size"]
        prep = Preprocess((int(h), int(w)), tuple(data["mean"]), tuple(data["std"]))
    return model, ModelInfo(class_names=_imagenet_if(_outputs(model)), preprocess=prep, output="logits")


def _imagenet_if(outputs: int | None) -> tuple[str, ...] | None:
    if outputs != 1000:
        return None
    from layerscope.models.classes import imagenet_classes

    return imagenet_classes()


# --------------------------------------------------------------------------- Hugging Face


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No transformers progress bars while loading (restored afterwards)."""
    log = getattr(getattr(transformers, "utils", None), "logging", None)
    enabled = getattr(log, "is_progress_bar_enabled", lambda: False)()
    if enabled:
        log.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            log.enable_progress_bar()


def _hf(repo: str, kind: str, weights: Any, seed: int, listing: bool) -> tuple[Any, ModelInfo]:
    transformers = _require("transformers", "hf")
    with _quiet(transformers):
        return _hf_load(transformers, repo, kind, weights, seed, listing)


def _hf_load(transformers: Any, repo: str, kind: str, weights: Any, seed: int, listing: bool) -> tuple[Any, ModelInfo]:
    auto_model = transformers.AutoModelForImageClassification
    where = f"{repo} from the Hugging Face Hub" if not Path(repo).is_dir() else repo
    example = ", or a local folder written by save_pretrained (hf:/path/to/folder)"

    def config() -> Any:
        try:
            return transformers.AutoConfig.from_pretrained(repo)
        except Exception as e:  # OSError offline, ValueError for a repo that is not a model
            raise _offline(f"the config of {where}", e, example) from None

    if kind == "pretrained" and not listing:
        try:
            model = auto_model.from_pretrained(repo)
        except Exception as e:
            raise _offline(where, e, example) from None
    else:
        cfg = config()

        def build() -> Any:
            return auto_model.from_config(cfg)

        if listing:
            from layerscope.models.registry import on_meta

            model = on_meta(build)
        elif kind == "random":
            with _seeded(seed):
                model = build()
        else:
            model = _from_file(build, weights, seed)
    cfg = model.config
    labels = getattr(cfg, "id2label", None) or {}
    names = [str(labels[k]) for k in sorted(labels, key=int)] if labels else []
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    return model, ModelInfo(
        class_names=tuple(names) if names and not generic else None,
        preprocess=_hf_preprocess(transformers, repo, cfg),
        output="logits",
    )


def _hf_preprocess(transformers: Any, repo: str, cfg: Any) -> Preprocess:
    """The image processor's size, mean and std, read from the local cache only (no network);
    else the config's ``image_size`` with ImageNet's normalisation."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    size = getattr(cfg, "image_size", None) or 224
    hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(repo, local_files_only=True)
    except Exception:
        return Preprocess(hw, mean, std)
    s = getattr(proc, "size", None)
    if isinstance(s, dict):
        if "height" in s and "width" in s:
            hw = (int(s["height"]), int(s["width"]))
        elif "shortest_edge" in s:
            hw = (int(s["shortest_edge"]), int(s["shortest_edge"]))
    elif isinstance(s, int):
        hw = (s, s)
    crop = getattr(proc, "crop_size", None)
    if getattr(proc, "do_center_crop", False) and isinstance(crop, dict) and "height" in crop:
        hw = (int(crop["height"]), int(crop["width"]))
    if getattr(proc, "do_normalize", True):
        mean = tuple(getattr(proc, "image_mean", None) or mean)
        std = tuple(getattr(proc, "image_std", None) or std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Preprocess(hw, mean, std)
