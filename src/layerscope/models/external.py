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
import importlib
import os
import sys
from typing import Any

from layerscope.errors import UsageError, unknown_name
from layerscope.info import RANDOM_WEIGHTS, ModelInfo, model_info
from layerscope.inputs import Preprocess
from layerscope.models._build import from_file, offline_error, on_meta, require, seeded

PACKAGES = ("torchvision", "timm", "hf")


def load(
    spec: str,
    weights: Any,
    *,
    seed: int = 0,
    listing: bool = False,
    trust_model: bool = False,
    size: tuple[int, int] | None = None,
) -> tuple[Any, ModelInfo]:
    """The model named by ``spec`` and its info (see the module); ``listing``: no weights
    needed (the architecture on the ``meta`` device where the package allows);
    ``trust_model``: an ``hf:`` model may run its own code (``auto_map``); ``size``: the
    input size the caller asked for (a Hugging Face config's own size is then not capped)."""
    prefix, _, rest = spec.partition(":")
    if not rest:
        raise UsageError(f"{spec!r}: give a name after the colon, e.g. torchvision:resnet50 or my_module:build")
    kind = _weights_kind(weights)
    if prefix == "torchvision":
        model, info = _torchvision(rest, kind, weights, seed, listing)
    elif prefix == "timm":
        model, info = _timm(rest, kind, weights, seed, listing)
    elif prefix == "hf":
        from layerscope.models import hf

        model, info = hf.load(rest, kind, weights, seed, listing, trust_model=trust_model, size=size)
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
            hint = unknown_name("name", part, names, n=3, cutoff=0.5, valid="")
            raise UsageError(f"{spec}: module {module_name!r} has no {attr!r}: {hint}") from None
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
    require("torchvision", "torchvision")
    models = importlib.import_module("torchvision.models")
    available = list(models.list_models())
    if name not in available:
        raise UsageError(unknown_name("torchvision model", name, available, n=4, cutoff=0.5, valid=""))
    default = models.get_model_weights(name).DEFAULT

    def build() -> Any:
        return models.get_model(name, weights=None)

    if listing:
        model = on_meta(build)
    elif kind == "pretrained":
        try:
            model = models.get_model(name, weights=default)
        except (OSError, RuntimeError, ValueError) as e:
            url = str(getattr(default, "url", "") or "")
            example = f", e.g. {url.rsplit('/', 1)[-1]} from {url}" if url else ""
            raise offline_error(f"torchvision's {name} weights", e, example) from None
    elif kind == "random":
        with seeded(seed):
            model = build()
    else:
        model = from_file(build, weights, seed)
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
    timm = require("timm", "timm")
    is_model = getattr(timm, "is_model", None)
    if is_model is not None and not is_model(name):
        raise UsageError(unknown_name("timm model", name, list(timm.list_models()), n=4, cutoff=0.6, valid=""))

    def build() -> Any:
        return timm.create_model(name, pretrained=False)

    if listing:
        model = on_meta(build)
    elif kind == "pretrained":
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as e:  # timm and the Hub raise many types when offline
            raise offline_error(f"timm's pretrained {name}", e, "") from None
    elif kind == "random":
        with seeded(seed):
            model = build()
    else:
        model = from_file(build, weights, seed)
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
