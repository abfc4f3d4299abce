"""The one way layerscope joins a Ray cluster, for the batch and the evaluate engines: the
cluster at ``address`` or ``RAY_ADDRESS``, else a fresh local Ray started for the call."""

from __future__ import annotations

import os
from typing import Any

from layerscope.errors import UsageError


def connect_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` / ``RAY_ADDRESS``, else start a fresh local Ray (never one a
    killed run left) of ``num_cpus`` CPUs (default: the machine's, between 2 and 8).

    Returns:
        Whether Ray was started (or connected) here, i.e. must be shut down here; ``False``
        when this process had already initialised Ray.
    """
    try:
        import ray
    except ImportError:
        raise UsageError('--engine ray needs Ray Data: pip install "layerscope[ray]" (or "ray[data]")') from None
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
    if address is None:
        kwargs["num_cpus"] = num_cpus if num_cpus is not None else max(2, min(os.cpu_count() or 2, 8))
        address = "local"
    ray.init(address=address, **kwargs)
    return True
