"""Exceptions raised by layerscope. The CLI turns each into one line and an exit code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def unknown_name(
    kind: str,
    name: object,
    choices: Iterable[str],
    *,
    cutoff: float = 0.5,
    n: int = 4,
    valid: str | None = None,
    also: str = "",
) -> str:
    """The one "did you mean" message: ``unknown KIND 'NAME'. Did you mean A, B? VALID: …``.

    Args:
        kind: what was asked for (``"CAM method"``, ``"layer"``, ``"model"``).
        name: what the user gave.
        choices: the valid names, in the order to list them.
        cutoff, n: :func:`difflib.get_close_matches`' similarity cutoff and most matches.
        valid: the label of the list (default ``"Valid KINDs"``); ``""`` leaves the list out.
        also: text appended after the list (other accepted forms).

    Returns:
        The message; the caller raises the error class that fits (usually :class:`UsageError`).
    """
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), names, n=n, cutoff=cutoff)
    parts = [f"unknown {kind} {name!r}."]
    if close:
        parts.append(f"Did you mean {', '.join(close)}?")
    label = f"Valid {kind}s" if valid is None else valid
    if label:
        parts.append(f"{label}: {', '.join(names) if names else '(none)'}")
    msg = " ".join(parts)
    return f"{msg}{also}" if also else msg


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """The one count in a message: ``1 method``, ``2 methods``, ``0 images`` (``nouns``: an
    irregular plural, ``plural(2, "class", "classes")``)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
