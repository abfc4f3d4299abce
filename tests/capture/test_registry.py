"""The adapter registry (:mod:`layerscope.capture._registry`) and what adapters declare."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerscope.capture import _registry, adapter_for, detect_framework, frameworks, get_adapter, register_adapter
from layerscope.errors import UsageError


def test_frameworks_are_registered_and_loaded_lazily() -> None:
    assert frameworks()[:2] == ["torch", "keras"]


def test_unknown_framework_suggests_the_close_one() -> None:
    with pytest.raises(UsageError, match=r"unknown framework 'torhc'\. Did you mean torch\?"):
        get_adapter("torhc")


def test_detection_goes_through_the_registry_without_importing() -> None:
    class Mine:
        pass

    Mine.__module__ = "toyframework.models"
    with pytest.raises(UsageError, match="cannot explain a Mine"):
        detect_framework(Mine())

    class ToyAdapter:
        name = "toy"

    register_adapter("toy", detect=_registry.module_root_is("toyframework"), load=ToyAdapter)
    try:
        assert detect_framework(Mine()) == "toy"
        assert isinstance(adapter_for(Mine()), ToyAdapter)
        with pytest.raises(ValueError, match="already registered"):
            register_adapter("toy", detect=lambda cls: False, load=ToyAdapter)
    finally:
        _registry._REGISTRY.pop("toy")
        _registry._LOADED.pop("toy", None)


def test_the_most_derived_class_decides() -> None:
    # A Keras model on the torch backend is a torch.nn.Module too: its own class is Keras's.
    class TorchBase:
        pass

    TorchBase.__module__ = "torch.nn.modules.module"

    class KerasModel(TorchBase):
        pass

    KerasModel.__module__ = "keras.src.models.model"
    assert detect_framework(KerasModel()) == "keras"
    assert detect_framework(TorchBase()) == "torch"


def test_torch_adapter_places_and_declares() -> None:
    torch = pytest.importorskip("torch")
    adapter = get_adapter("torch")
    assert adapter.supports.several_inputs and "perturbation" in adapter.supports.needs
    assert adapter.resolve_device(None) is None and adapter.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device"):
        adapter.resolve_device("tpu:0")
    model = torch.nn.Linear(2, 2)
    with adapter.placed(model, torch.device("cpu")) as dev:
        assert dev == torch.device("cpu")
    assert adapter.accelerators() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_keras_adapter_declares_no_placement() -> None:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    adapter = get_adapter("keras")
    assert adapter.supports.devices == ("auto",) and adapter.supports.needs == {"activations", "gradients"}
    assert adapter.resolve_device("auto") is None and adapter.accelerators() == 0
    with pytest.raises(UsageError, match="is for PyTorch models; a Keras model runs where Keras placed it"):
        adapter.resolve_device("cuda")
    with adapter.placed(object(), None) as nothing:
        assert nothing is None


def test_keras_without_its_backend_says_which_backend_and_how_to_choose_one() -> None:
    # Issue 18 item 14: Keras installed, its backend not: say so, and name KERAS_BACKEND.
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    missing = next((b for b in ("jax", "tensorflow") if importlib.util.find_spec(b) is None), None)
    if missing is None:
        pytest.skip("every Keras backend is installed here")
    code = (
        "from layerscope.capture.keras import keras_module\n"
        "from layerscope.errors import UsageError\n"
        "try:\n    keras_module()\nexcept UsageError as e:\n    print(e)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": missing}
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    out = r.stdout.strip()
    assert f"Keras is installed but its backend {missing!r} is not" in out, r.stdout + r.stderr
    assert "KERAS_BACKEND=torch" in out and "Keras 3 is not installed" not in out
