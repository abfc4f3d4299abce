"""The output registry: extension → :class:`~layerscope.outputs.base.Writer`.

Each format module calls :func:`register` for its extensions; ``outputs/__init__`` imports
the format modules. Every list of formats (the CLI's help, batch's ``--save`` kinds) is
read from :data:`WRITERS` when it is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from layerscope.errors import UsageError
from layerscope.outputs.base import Writer

#: Extension (lower case, with its dot) → writer, in registration order.
WRITERS: dict[str, Writer] = {}


def register(ext: str, writer: Writer, *, replace: bool = False) -> Writer:
    """Make ``writer`` write files ending in ``ext`` (``".gif"``); returns the writer.

    Raises:
        UsageError: ``ext`` is not ``.name``, ``writer`` is not a :class:`Writer`, or the
            extension has a writer already (unless ``replace``).
    """
    if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2 or any(c in ext[1:] for c in "./\\ "):
        raise UsageError(f"an output extension is a dot and a name, like '.gif', not {ext!r}")
    if not isinstance(writer, Writer):
        raise UsageError(f"register({ext!r}, …) takes a layerscope.outputs.Writer, not {type(writer).__name__}")
    key = ext.lower()
    if key in WRITERS and not replace and WRITERS[key] is not writer:
        raise UsageError(f"{key} already has a writer ({WRITERS[key].name}); pass replace=True to replace it")
    WRITERS[key] = writer
    return writer


def extensions() -> list[str]:
    """The extensions a result can be written as."""
    return list(WRITERS)


def writer_for(path: str | os.PathLike[str]) -> Writer:
    """The writer of ``path``'s extension; a :class:`~layerscope.errors.UsageError` listing
    the known extensions for an unknown or missing one."""
    p = Path(path)
    ext = p.suffix.lower()
    w = WRITERS.get(ext)
    if w is None:
        raise UsageError(
            f"{p}: unsupported output type {ext or '(no extension)'}; use one of {', '.join(WRITERS)}"
            " (the writer is chosen by extension)"
        )
    return w
