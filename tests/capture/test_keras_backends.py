"""The Keras tests on the other Keras backends, and what gets imported.

A Keras backend is fixed when keras is first imported, so each backend runs in its own
Python process (``KERAS_BACKEND``). The main process runs the Keras tests on the torch
backend; here they run again on TensorFlow (installed in CI) and JAX (where installed).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TESTS = HERE.parent


def _test_file(name: str) -> str:
    """A test module by its (unique) file name, wherever it lives under tests/."""
    return str(next(TESTS.rglob(name)))


pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")


def _run(args: list[str], backend: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=TESTS.parent
    )


#: JAX compiles each new shape on first use (slow on CPU): there, the core checks only.
JAX_SUBSET = "known_answer or parity or one_forward or unchanged or subclassed or unreachable or no_per_layer_host_copy"
#: Tests named ``*torch_backend_only`` check torch-specific behaviour; the other backends skip them.


def _current_backend() -> str:
    """The backend the Keras tests of this process use (they default to torch)."""
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "torch")


@pytest.mark.parametrize(
    ("backend", "files", "select"),
    [
        ("torch", ["test_keras_adapter.py", "test_keras_zoo.py"], None),
        ("tensorflow", ["test_keras_adapter.py", "test_keras_zoo.py"], "not torch_backend_only"),
        ("jax", ["test_keras_adapter.py"], JAX_SUBSET),
    ],
)
def test_keras_tests_on_backend(backend: str, files: list[str], select: str | None) -> None:
    if backend == _current_backend():
        pytest.skip(f"the Keras tests already run on {backend} in this process")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    paths = [_test_file(f) for f in files]
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", *paths]
    r = _run([*args, "-k", select] if select else args, backend)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]


def test_import_layerscope_does_not_import_keras() -> None:
    code = (
        "import sys, layerscope\n"
        "layerscope.explain, layerscope.load_model, layerscope.list_methods\n"
        "import layerscope.cli, layerscope.recipe, layerscope.datasets.cifar10\n"
        "layerscope.cli.build_parser()\n"
        "bad = [m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = _run(["-c", code], "tensorflow")
    assert r.returncode == 0, r.stderr[-2000:]


def test_tensorflow_backend_never_imports_torch() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    code = (
        "import sys, warnings, numpy as np, layerscope\n"
        "m = layerscope.load_model('vgg16-cifar10', weights='random', framework='keras', size=32)\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    e = layerscope.explain(m, np.zeros((32, 32, 3), np.uint8), guided_grads=True)\n"
        "assert len(e.layers) == 13, e.layers\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad[:5]\n"
    )
    r = _run(["-c", code], "tensorflow")
    assert r.returncode == 0, r.stderr[-2000:]
