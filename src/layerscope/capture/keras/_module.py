"""Importing Keras 3: one clear line when Keras, or the backend it is set to use, is missing."""

from __future__ import annotations

import os
from typing import Any

from layerscope.errors import UsageError

#: The Keras backends and the package each one needs.
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def keras_module() -> Any:
    """``keras`` (Keras 3), imported on first use.

    Raises:
        UsageError: Keras is not installed; its backend (``KERAS_BACKEND``, TensorFlow by
            default) is not, saying how to choose another one; or this is Keras 2.
    """
    try:
        import keras
    except ImportError as e:
        missing = (getattr(e, "name", None) or "").split(".")[0]
        if missing == "keras":
            raise UsageError("Keras 3 is not installed: pip install 'layerscope[keras]' (and a backend)") from None
        backend = os.environ.get("KERAS_BACKEND") or "tensorflow"
        if missing in BACKENDS.values() or missing == backend:
            others = [b for b in BACKENDS if b != backend]
            raise UsageError(
                f"Keras is installed but its backend {backend!r} is not (No module named {missing!r}): "
                f"pip install {BACKENDS.get(backend, backend)}, or choose an installed backend with "
                f"KERAS_BACKEND={others[-1]} (or {others[0]}) in the environment"
            ) from None
        raise UsageError(f"Keras 3 could not be imported: {type(e).__name__}: {e}") from None
    if not keras.__version__.startswith("3"):
        raise UsageError(f"layerscope needs Keras 3; this is Keras {keras.__version__}")
    return keras
