"""The package version and the versions a result records (one list for every writer)."""

from __future__ import annotations

import functools
import platform

__version__ = "0.1.0"

#: Distributions whose installed version a result records, when installed (read from their
#: metadata: nothing is imported to ask).
RECORDED = ("numpy", "torch", "keras", "tensorflow", "jax", "pillow", "pyarrow", "ray")


@functools.lru_cache(maxsize=1)  # metadata lookups cost ~ms each; a dataset run saves thousands of files
def _installed() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    found = []
    for name in RECORDED:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(found)


def versions() -> dict[str, str]:
    """``{"layerscope": …, "python": …, "numpy": …, …}``: layerscope's, Python's and each
    installed package of :data:`RECORDED` (the ``.npz`` manifest and a batch run's metadata)."""
    return {"layerscope": __version__, "python": platform.python_version(), **dict(_installed())}
