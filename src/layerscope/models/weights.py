"""Loading weights safely: local ``.pth`` state dicts (``weights_only=True``, no unsafe
retry), ``.safetensors`` files, and torchvision's published files (SHA-256 prefix checked,
cached in torch's hub cache)."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from typing import Any

from layerscope.errors import WeightsError

#: torchvision's published VGG16 ImageNet weights; the 8 hex digits in the file name are
#: the start of the file's SHA-256, checked after download.
VGG16_IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A state dict from a ``.safetensors`` or ``.pth``/``.pt`` file.

    Raises:
        WeightsError: missing file, a pickled whole model or other non-tensor content
            (refused by ``weights_only=True``; never retried unsafely), unreadable data.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p)))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{p}: not a readable safetensors file: {e}") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsError(
            f"{p}: refused: not a plain state dict of tensors (a pickled whole model or "
            f"arbitrary code?); save `model.state_dict()` instead. ({first})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise WeightsError(f"{p}: cannot read the weights file: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: does not hold a state dict (a mapping of names to tensors)")
    return obj


def apply_state_dict(model: Any, state: dict[str, Any], source: str, strict: bool = True) -> list[str]:
    """Load ``state`` into ``model``, naming every missing or unexpected key and every shape
    that differs. With ``strict=False`` missing keys are allowed and returned."""
    own = model.state_dict()
    strip = "module."
    if state and all(k.startswith(strip) for k in state):  # saved from DataParallel
        state = {k[len(strip) :]: v for k, v in state.items()}
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:5]) + (" …" if len(shapes) > 5 else ""))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected[:5]) + (" …" if len(unexpected) > 5 else ""))
    if missing and strict:
        problems.append("missing keys: " + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + " | ".join(problems))
    model.load_state_dict(state, strict=False)
    return missing


def download_torchvision(url: str, timeout: float = 30.0) -> Path:
    """The file at ``url`` in torch's hub cache, downloaded (with its SHA-256 prefix
    checked) only if not already there."""
    import torch.hub

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    name = url.rsplit("/", 1)[-1]
    dst = cache / name
    if dst.is_file():
        return dst
    cache.mkdir(parents=True, exist_ok=True)
    sha_prefix = name.rsplit("-", 1)[-1].split(".")[0]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=sha_prefix, progress=True)
    except RuntimeError as e:  # hash mismatch
        raise WeightsError(f"{url}: {e}") from None
    except OSError as e:
        raise WeightsError(
            f"cannot download {url} ({e.__class__.__name__}: {e}). Offline? Pass a local "
            f"weights file (--weights PATH, e.g. {name} copied into {cache}), or --weights random"
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    return dst
