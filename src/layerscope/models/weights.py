"""Loading weights safely: local ``.pth`` state dicts (``weights_only=True``, no unsafe
retry), ``.safetensors`` files, and published files (SHA-256 checked, cached, written
atomically)."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import urllib.request
from pathlib import Path
from typing import Any

from layerscope.errors import WeightsError

#: torchvision's published VGG16 ImageNet weights; the 8 hex digits in the file name are
#: the start of the file's SHA-256, checked after download.
VGG16_IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
#: torchvision's ResNet-50 ImageNet weights (``IMAGENET1K_V2``, its default: 80.9 % top-1).
RESNET50_IMAGENET_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A state dict from a ``.safetensors`` or ``.pth``/``.pt`` file.

    Raises:
        WeightsError: missing file, a pickled whole model or other non-tensor content
            (refused by ``weights_only=True``; never retried unsafely), unreadable or corrupt
            data (whatever the reader raises), sparse tensors, or no floating-point tensor
            at all (an integer state dict would give flat maps).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file")
    obj = _read_safetensors(p) if p.suffix == ".safetensors" else _read_pickled(p)
    return _checked(p, obj)


def _read_safetensors(p: Path) -> Any:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(p)))
    except Exception as e:  # SafetensorError, OSError, ValueError … on a corrupt file
        raise WeightsError(f"{p}: not a readable safetensors file: {_one_line(e)}") from None


def _read_pickled(p: Path) -> Any:
    import torch

    try:
        try:  # memory-mapped: nothing is copied until the tensors are used
            return torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # a legacy (non-zip) file cannot be mapped; anything else is an error
                raise
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{p}: refused: not a plain state dict of tensors{_refused_global(str(e))} (a pickled whole model "
            "or arbitrary code?); save `model.state_dict()` (or a .safetensors file) instead"
        ) from None
    except Exception as e:  # RuntimeError, EOFError, struct.error, IndexError … on a corrupt file
        raise WeightsError(f"{p}: cannot read the weights file ({type(e).__name__}: {_one_line(e)})") from None


def _checked(p: Path, obj: Any) -> dict[str, Any]:
    """``obj`` if it is a usable state dict: names (str) → dense tensors, some floating."""
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not all(isinstance(k, str) for k in obj)
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise WeightsError(f"{p}: does not hold a state dict (a mapping of names to tensors)")
    for k, v in obj.items():
        if v.layout != torch.strided:
            raise WeightsError(f"{p}: refused: {k!r} is a sparse tensor ({v.layout}); save dense weights instead")
    if obj and not any(v.is_floating_point() for v in obj.values()):
        kinds = ", ".join(sorted({str(v.dtype).removeprefix("torch.") for v in obj.values()}))
        raise WeightsError(f"{p}: refused: no floating-point tensor ({kinds} only); weights must be float")
    return obj


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def _refused_global(message: str) -> str:
    """``" (it needs GLOBAL x.y)"`` from torch's refusal, without its advice or ANSI codes."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return f": it needs {found.group(1)}" if found else ""


def _normalise(state: dict[str, Any]) -> dict[str, Any]:
    strip = "module."
    if state and all(k.startswith(strip) for k in state):  # saved from DataParallel
        return {k[len(strip) :]: v for k, v in state.items()}
    return state


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" … ({len(keys)} in all)" if len(keys) > 5 else "")


def check_state_dict(model: Any, state: dict[str, Any], source: str, strict: bool = True) -> list[str]:
    """Check that ``state`` fits ``model`` (which may be on the ``meta`` device) without
    changing anything: every missing or unexpected key and every shape that differs is named.
    With ``strict=False`` missing keys are allowed and returned."""
    state = _normalise(state)
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = [k for k in own if k not in state]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    dtypes = [
        f"{k}: file {state[k].dtype} vs model {own[k].dtype}"
        for k in own
        if k in state and own[k].is_floating_point() and not state[k].is_floating_point()
    ]
    problems = []
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:5]) + (" …" if len(shapes) > 5 else ""))
    if dtypes:
        problems.append("not floating-point: " + "; ".join(dtypes[:5]) + (" …" if len(dtypes) > 5 else ""))
    if unexpected:
        problems.append("unexpected keys: " + _listed(unexpected))
    if missing and strict:
        problems.append("missing keys: " + _listed(missing))
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + " | ".join(problems))
    return missing


def apply_state_dict(model: Any, state: dict[str, Any], source: str, strict: bool = True) -> list[str]:
    """Load ``state`` into ``model`` after :func:`check_state_dict` (nothing is changed when it
    does not fit). With ``strict=False`` missing keys are allowed and returned."""
    missing = check_state_dict(model, state, source, strict)
    try:
        model.load_state_dict(_normalise(state), strict=False)
    except Exception as e:  # a tensor torch cannot copy in (checked above, so rare)
        raise WeightsError(f"{source} does not load into {type(model).__name__}: {_one_line(e)}") from None
    return missing


def cache_dir() -> Path:
    """torch's hub cache for checkpoints (``$TORCH_HOME/hub/checkpoints``), where torchvision
    keeps its published files too."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def download(url: str, dst: Path, hash_prefix: str = "", algorithm: str = "sha256", timeout: float = 30.0) -> Path:
    """``dst`` if it exists, else the file at ``url`` downloaded to it (atomically; the file's
    hash, or its first digits ``hash_prefix``, checked before the file gets its name).

    Raises:
        WeightsError: offline or unreachable (one line: the cause and how to pass a local
            file instead), or a checksum mismatch.
    """
    from layerscope.atomic import atomic_file

    if dst.is_file():
        return dst
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create the weights cache {dst.parent}: {e.strerror or e}") from None

    def offline(e: BaseException) -> WeightsError:
        reason = " ".join(str(getattr(e, "reason", None) or e).split())
        return WeightsError(
            f"cannot download {url} ({reason}). Offline? Pass a local weights file "
            f"(--weights PATH, e.g. {dst.name} copied into {dst.parent}), or --weights random"
        )

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, ValueError) as e:
        raise offline(e) from None
    digest = hashlib.new(algorithm)
    with response, atomic_file(dst, overwrite=False) as f:
        while True:
            try:
                chunk = response.read(1 << 20)
            except OSError as e:  # not the file's fault: reported as a download error, not a write error
                raise offline(e) from None
            if not chunk:
                break
            digest.update(chunk)
            f.write(chunk)
        got = digest.hexdigest()
        if not got.startswith(hash_prefix.lower()):
            raise WeightsError(f"{url}: the downloaded file's {algorithm} hash does not match ({got[:16]}…); not kept")
    return dst


def download_torchvision(url: str, timeout: float = 30.0) -> Path:
    """A torchvision published file (``<name>-<sha256 prefix>.pth``) from torch's hub cache,
    downloaded (with its SHA-256 prefix checked) only if not already there."""
    name = url.rsplit("/", 1)[-1]
    sha_prefix = name.rsplit("-", 1)[-1].split(".")[0]
    return download(url, cache_dir() / name, hash_prefix=sha_prefix, timeout=timeout)
