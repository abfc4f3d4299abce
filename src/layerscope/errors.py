"""Exceptions raised by layerscope. The CLI turns each into one line and an exit code."""

from __future__ import annotations


class LayerscopeError(Exception):
    """Base class of every error layerscope raises on purpose (bad input, bad setup)."""

    exit_code = 1


class UsageError(LayerscopeError, ValueError):
    """A wrong argument: unknown method, layer, class, colormap, option value."""

    exit_code = 2


class InputImageError(LayerscopeError, ValueError):
    """An input image that is missing, empty, not an image, truncated or too large."""


class WeightsError(LayerscopeError):
    """Weights that are missing, unsafe, unreadable or do not fit the architecture."""


class OutputError(LayerscopeError):
    """An output that exists (without overwrite) or cannot be written."""


class ModelError(LayerscopeError):
    """A model layerscope cannot explain (no conv layer, unreachable layer, NaN output)."""
