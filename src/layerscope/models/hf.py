"""Hugging Face models (``hf:REPO_ID`` or ``hf:/path/to/folder``) through
``transformers.AutoModelForImageClassification``, safely and fast:

* **no remote code**: ``trust_remote_code`` is always passed (``False`` unless the caller
  said ``trust_model=True`` / ``--trust-model``), so transformers never asks on stdin; a
  ``config.json`` with an ``auto_map`` (custom Python classes) is refused before transformers
  reads it, naming what it asks for;
* **offline, one fast line**: a repo id is looked up in the local cache first; when it is not
  there and the Hub cannot be reached (checked once, in under 2 s), one error says so, instead
  of transformers' retries;
* a local path that does not exist says so (not "Repo id must be in the form …");
* **bounded input size**: a config asking for more than
  :data:`~layerscope.models._build.MAX_MODEL_SIDE` pixels a side is capped, with a warning
  naming ``--size`` to use the model's own; the model's fixed input size is recorded as
  :attr:`ModelInfo.input_size <layerscope.info.ModelInfo.input_size>`;
* **CLIP**: a config with a vision and a text tower (``CLIPModel``, ``SiglipModel`` …) is
  loaded whole (``AutoModel``), its input size read from the vision tower's config, and its
  folder's tokenizer recorded as :attr:`ModelInfo.tokenizer
  <layerscope.info.ModelInfo.tokenizer>` (loaded when :func:`layerscope.targets.text` first
  needs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError, WeightsError
from layerscope.info import ModelInfo
from layerscope.inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from layerscope.models._build import MAX_MODEL_SIDE, from_file, on_meta, require, seeded

#: Where the Hub is checked for (host, port), and how long the check may take.
HUB_ADDRESS = ("huggingface.co", 443)
HUB_TIMEOUT_S = 1.5


def load(
    repo: str,
    kind: str,
    weights: Any,
    seed: int,
    listing: bool,
    *,
    trust_model: bool = False,
    size: tuple[int, int] | None = None,
) -> tuple[Any, ModelInfo]:
    """The model and its info (``kind``: ``"pretrained"``, ``"random"`` or ``"file"``)."""
    transformers = require("transformers", "hf")
    folder = _local_folder(repo)
    local_only = False
    if folder is None:
        config_file = _cached_config(repo)
        local_only = _hub_offline()
        if config_file is None and local_only:
            raise WeightsError(
                f"hf:{repo}: not in the local Hugging Face cache, and the Hub ({HUB_ADDRESS[0]}) cannot be reached "
                "(offline?): connect once to download it, or pass a local folder written by save_pretrained "
                "(hf:/path/to/folder)"
            )
        if config_file is None:
            config_file = _download_config(repo)
    else:
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise UsageError(f"hf:{repo}: the folder has no config.json (not a folder written by save_pretrained)")
    _check_remote_code(repo, config_file, trust_model)
    dual = _dual_encoder(_read_config(repo, config_file))
    with _quiet(transformers):
        model = _build(transformers, repo, kind, weights, seed, listing, trust_model, local_only, dual)
        info = _info(transformers, repo, model.config, trust_model, size)
        return model, info.replace(tokenizer=_Tokenizer(repo, trust_model, local_only)) if dual else info


def is_dual_encoder(repo: str) -> bool | None:
    """Whether ``hf:REPO`` is a model with a vision and a text tower (CLIP), read from its
    ``config.json`` alone when it is a local folder or in the local cache (``None``: not known
    without a download)."""
    folder = _local_folder(repo)
    config_file = folder / "config.json" if folder is not None else _cached_config(repo)
    if config_file is None or not config_file.is_file():
        return None
    return _dual_encoder(_read_config(repo, config_file))


def _read_config(repo: str, config_file: Path | None) -> dict[str, Any]:
    if config_file is None:
        return {}
    try:
        config = json.loads(config_file.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsError(f"hf:{repo}: cannot read its config.json: {e}") from None
    return config if isinstance(config, dict) else {}


def _dual_encoder(config: dict[str, Any]) -> bool:
    """A vision and a text tower, and not saved as an image classifier (CLIPForImageClassification)."""
    archs = config.get("architectures") or []
    classifier = any("ForImageClassification" in str(a) for a in archs)
    return "vision_config" in config and "text_config" in config and not classifier


class _Tokenizer:
    """The tokenizer of a Hugging Face folder or repo, loaded on its first call (no network
    when the model came from the local cache)."""

    def __init__(self, repo: str, trust: bool, local_only: bool) -> None:
        self.repo, self.trust, self.local_only = repo, trust, local_only
        self._tok: Any = None

    def __repr__(self) -> str:
        return f"<tokenizer of hf:{self.repo}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._tok is None:
            transformers = require("transformers", "hf")
            opts = {"trust_remote_code": self.trust, **({"local_files_only": True} if self.local_only else {})}
            try:
                tok = transformers.AutoTokenizer.from_pretrained(self.repo, **opts)
                special = set(getattr(tok, "all_special_tokens", ()))
                if len(tok) <= len(special):  # transformers 5 makes an empty one when the files are missing
                    raise OSError("it has no vocabulary (no tokenizer files)")
            except Exception as e:
                why = " ".join(str(e).split())[:200]
                raise UsageError(
                    f"hf:{self.repo}: cannot load its tokenizer ({type(e).__name__}: {why}); "
                    "save the tokenizer (or processor) into the folder with save_pretrained, or pass tokenizer= / "
                    "input_ids= to layerscope.targets.text"
                ) from None
            self._tok = tok
        return self._tok(*args, **kwargs)


def _download_config(repo: str) -> Path:
    """A Hub repo's ``config.json`` alone (read before anything else of the repo)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, "config.json"))
    except Exception as e:  # not found, gated, network
        raise _error(f"the config of {repo} from the Hugging Face Hub", e) from None


def _error(what: str, e: BaseException, folder: bool = False) -> WeightsError:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 300:
        text = text[:300].rsplit(" ", 1)[0] + " …"
    fix = (
        "the folder must hold what save_pretrained writes (config.json and the weights), or pass --weights PATH"
        if folder
        else "check the repo id, or pass a local folder written by save_pretrained (hf:/path/to/folder)"
    )
    return WeightsError(f"cannot get {what} ({type(e).__name__}: {text}); {fix}")


def _local_folder(repo: str) -> Path | None:
    """The folder ``repo`` names, ``None`` for a Hub repo id; a path that is not a folder is an error."""
    p = Path(repo).expanduser()
    if p.is_dir():
        return p
    pathlike = (
        repo.startswith(("/", ".", "~", "\\"))
        or repo.count("/") > 1
        or "\\" in repo
        or (len(repo) > 1 and repo[1] == ":")
    )
    if p.exists():
        raise UsageError(f"hf:{repo}: is a file, not a folder written by save_pretrained (or a Hub repo id)")
    if pathlike:
        raise UsageError(f"hf:{repo}: no such folder (give a folder written by save_pretrained, or a Hub repo id)")
    return None


def _cached_config(repo: str) -> Path | None:
    """``config.json`` of a Hub repo in the local cache, or ``None``."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json")
    except Exception:  # an invalid repo id, no huggingface_hub: not cached
        return None
    return Path(found) if isinstance(found, (str, os.PathLike)) and Path(found).is_file() else None


_OFFLINE: bool | None = None


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` set, or the Hub unreachable (one connection attempt, remembered)."""
    global _OFFLINE
    with contextlib.suppress(Exception):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if _OFFLINE is None:
        try:
            socket.create_connection(HUB_ADDRESS, timeout=HUB_TIMEOUT_S).close()
            _OFFLINE = False
        except OSError:
            _OFFLINE = True
    return _OFFLINE


def _check_remote_code(repo: str, config_file: Path | None, trust_model: bool) -> None:
    """Refuse a config that asks for its own Python code (``auto_map``) unless trusted."""
    if config_file is None or trust_model:
        return
    try:
        config = json.loads(config_file.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsError(f"hf:{repo}: cannot read its config.json: {e}") from None
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if auto_map:
        entries = auto_map.items() if isinstance(auto_map, dict) else [("auto_map", auto_map)]
        asks = "; ".join(f"{k} → {v}" for k, v in entries)
        if len(asks) > 300:
            asks = asks[:300] + " …"
        raise UsageError(
            f"hf:{repo}: its config.json asks to run its own Python code (auto_map: {asks}); refused. "
            "Pass --trust-model (trust_model=True) only if you trust that code"
        )


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


def _build(
    transformers: Any,
    repo: str,
    kind: str,
    weights: Any,
    seed: int,
    listing: bool,
    trust: bool,
    local_only: bool,
    dual: bool = False,
) -> Any:
    auto_model = transformers.AutoModel if dual else transformers.AutoModelForImageClassification
    folder = Path(repo).expanduser().is_dir()
    where = repo if folder else f"{repo} from the Hugging Face Hub"
    opts = {"trust_remote_code": trust, **({"local_files_only": True} if local_only else {})}
    if kind == "pretrained" and not listing:
        try:
            return auto_model.from_pretrained(repo, **opts)
        except Exception as e:
            raise _error(where, e, folder) from None
    try:
        cfg = transformers.AutoConfig.from_pretrained(repo, **opts)
    except Exception as e:  # OSError offline, ValueError for a repo that is not a model
        raise _error(f"the config of {where}", e, folder) from None

    def build() -> Any:
        return auto_model.from_config(cfg, trust_remote_code=trust)

    if listing:
        return on_meta(build)
    if kind == "random":
        with seeded(seed):
            return build()
    return from_file(build, weights, seed)


def _info(transformers: Any, repo: str, cfg: Any, trust: bool, size: tuple[int, int] | None) -> ModelInfo:
    labels = getattr(cfg, "id2label", None) or {}
    names = [str(labels[k]) for k in sorted(labels, key=int)] if labels else []
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    fixed = getattr(cfg, "image_size", None) or getattr(getattr(cfg, "vision_config", None), "image_size", None)
    prep = _preprocess(transformers, repo, cfg, trust)
    if size is None and max(prep.size) > MAX_MODEL_SIDE:
        h, w = prep.size
        scale = MAX_MODEL_SIDE / max(h, w)
        capped = (max(1, round(h * scale)), max(1, round(w * scale)))
        warnings.warn(
            f"hf:{repo}: the model asks for {h}×{w} input, above layerscope's cap of {MAX_MODEL_SIDE} px a side: "
            f"using {capped[0]}×{capped[1]}; pass --size {h}{'' if h == w else f' {w}'} to use the model's own",
            UserWarning,
            stacklevel=4,
        )
        prep = Preprocess(capped, prep.mean, prep.std)
    return ModelInfo(
        class_names=tuple(names) if names and not generic else None,
        preprocess=prep,
        output="logits",
        input_size=_hw(fixed) if fixed else None,
    )


def _hw(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _preprocess(transformers: Any, repo: str, cfg: Any, trust: bool) -> Preprocess:
    """The image processor's size, mean and std, read from the local cache only (no network);
    else the config's ``image_size`` with ImageNet's normalisation."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    hw = _hw(getattr(cfg, "image_size", None) or getattr(getattr(cfg, "vision_config", None), "image_size", 224))
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(repo, local_files_only=True, trust_remote_code=trust)
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
