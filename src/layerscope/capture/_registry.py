"""The adapter registry: each framework's adapter registered by name with a detector (is
this model mine?), loaded — and its framework imported — only when asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerscope.capture._request import Adapter
from layerscope.errors import UsageError, unknown_name


@dataclass(frozen=True)
class _Entry:
    detect: Callable[[type], bool]
    load: str | Callable[[], Adapter]  # "module:Class", or a factory


_REGISTRY: dict[str, _Entry] = {}
_LOADED: dict[str, Adapter] = {}


def register_adapter(name: str, *, detect: Callable[[type], bool], load: str | Callable[[], Adapter]) -> None:
    """Register a framework's adapter.

    Args:
        name: the framework's name (``explain(framework=...)``, ``--framework``).
        detect: ``detect(cls) -> bool``, whether a class is this framework's; asked for
            each class of the model's MRO, most derived first, so a Keras model on the
            torch backend (a ``torch.nn.Module`` too) is Keras's. It must not import the
            framework.
        load: ``"package.module:Class"`` (imported on first use) or a factory.
    """
    if name in _REGISTRY:
        raise ValueError(f"capture adapter {name!r} is already registered")
    _REGISTRY[name] = _Entry(detect, load)


def frameworks() -> list[str]:
    """The registered framework names, in registration order."""
    return list(_REGISTRY)


def get_adapter(framework: str) -> Adapter:
    """The adapter for ``framework`` (the framework is imported only now)."""
    entry = _REGISTRY.get(framework)
    if entry is None:
        raise UsageError(unknown_name("framework", framework, _REGISTRY))
    if framework not in _LOADED:
        if isinstance(entry.load, str):
            module, _, cls = entry.load.partition(":")
            _LOADED[framework] = getattr(importlib.import_module(module), cls)()
        else:
            _LOADED[framework] = entry.load()
    return _LOADED[framework]


def detect_framework(model: Any) -> str:
    """The name of the framework whose detector claims ``model`` (no framework imported)."""
    for cls in type(model).__mro__:
        for name, entry in _REGISTRY.items():
            if entry.detect(cls):
                return name
    raise UsageError(f"cannot explain a {type(model).__name__}: expected a torch.nn.Module or a keras.Model")


def adapter_for(model: Any, framework: str | None = None) -> Adapter:
    """The adapter of ``framework``, or of the framework ``model`` belongs to."""
    return get_adapter(framework or detect_framework(model))


def module_root_is(*roots: str) -> Callable[[type], bool]:
    """A detector: whether a class comes from one of the ``roots`` packages."""

    def detect(cls: type) -> bool:
        return cls.__module__.split(".")[0] in roots

    return detect
