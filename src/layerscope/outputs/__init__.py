"""Writers, chosen by file extension, behind one registry (:data:`WRITERS`).

``outputs.write(explanation, "tour.gif")`` picks the writer from the extension; every write
goes through :mod:`layerscope.atomic` (a temporary file renamed over the target only when
complete; an existing file refused unless ``overwrite``). :func:`check_path` does every
cheap check — the extension is known, the places are writable, the frames fit the
format — so that a command can fail *before* loading a model.

Adding a format is one module with a :class:`~layerscope.outputs.base.Writer` and one
:func:`register` call (``register(".toy", Writer("toy text", write_toy))``); the CLI's
help and checks and batch's ``--save`` kinds are read from :data:`WRITERS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from layerscope.atomic import check_writable
from layerscope.errors import UsageError, plural
from layerscope.outputs import animation, arrays, html, video  # noqa: F401  (each registers its writers)
from layerscope.outputs._registry import WRITERS, extensions, register, writer_for
from layerscope.outputs.animation import shared_palette, write_animation, write_gif
from layerscope.outputs.arrays import read_manifest, write_npz
from layerscope.outputs.base import Writer
from layerscope.outputs.html import explorer_assets, explorer_fragment, explorer_page, write_html
from layerscope.outputs.image import IMAGE_FORMATS, check_image_output, write_image
from layerscope.outputs.video import write_mp4
from layerscope.render.drawing import frame_bound
from layerscope.render.options import RenderOptions

log = logging.getLogger("layerscope")

__all__ = [
    "IMAGE_FORMATS",
    "WRITERS",
    "Writer",
    "check_image_output",
    "check_path",
    "explorer_assets",
    "explorer_fragment",
    "explorer_page",
    "extensions",
    "output_paths",
    "read_manifest",
    "register",
    "shared_palette",
    "write",
    "write_animation",
    "write_gif",
    "write_html",
    "write_image",
    "write_mp4",
    "write_npz",
    "writer_for",
]


def output_paths(path: str | os.PathLike[str], n_images: int = 1, index: int | None = None) -> list[Path]:
    """The files :func:`write` makes: ``path`` itself, or for several images and a writer
    with one file per image, ``NAME_0.EXT``, ``NAME_1.EXT`` …"""
    p = Path(path)
    w = writer_for(p)
    if not w.per_image or index is not None or n_images <= 1:
        return [p]
    return [p.with_name(f"{p.stem}_{i}{p.suffix}") for i in range(n_images)]


def check_path(
    path: str | os.PathLike[str],
    options: RenderOptions | None = None,
    overwrite: bool = False,
    n_images: int = 1,
    *,
    index: int | None = None,
) -> list[Path]:
    """Every check that needs no model and no maps, in order: the extension has a writer,
    the options are valid, frames drawn under ``options`` fit the format (for any image:
    ``options.max_side`` bounds them), each file to be written can be written (and does
    not exist, unless ``overwrite``).

    Returns:
        The paths :func:`write` will write.
    """
    w = writer_for(path)
    for module, hint in w.requires:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise UsageError(f"{Path(path).name}: {w.name} output needs {module}: {hint}")
    opts = RenderOptions.of(options)
    if w.draws_frames and w.max_side is not None:
        fw, fh = frame_bound(opts)
        if max(fw, fh) > w.max_side:
            raise UsageError(
                f"{Path(path)}: frames can be up to {fw}×{fh} pixels with max_side={opts.max_side}"
                f"{' and side_by_side' if opts.side_by_side else ''}, more than {w.name.split(' (')[0]} allows"
                f" ({w.max_side:,} per side); lower max_side (--max-side)"
            )
    paths = output_paths(path, n_images, index)
    for p in paths:
        check_writable(p, overwrite)
    return paths


def write(
    explanation: Any,
    path: str | os.PathLike[str],
    options: RenderOptions | None = None,
    *,
    index: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write an explanation, the writer chosen by ``path``'s extension.

    Args:
        explanation: a :class:`layerscope.Explanation`.
        path: the file; its extension picks the writer (:func:`extensions`).
        options: how to draw (:class:`~layerscope.render.options.RenderOptions`).
        index: write only image ``index``; ``None``: every image — one file per image
            (``NAME_0.EXT`` …) for formats that hold one image, all in one ``.npz``.
        overwrite: replace existing files.

    Returns:
        The files written.
    """
    w = writer_for(path)
    opts = RenderOptions.of(options)
    n = len(explanation.targets)
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise UsageError(f"image index {index!r} is out of range for {plural(n, 'image')}")
    paths = check_path(path, opts, overwrite, n, index=index)
    if w.per_image:
        indices: Iterable[int | None] = [index] if index is not None else range(n)
    else:
        indices = [index]
    written = [w.write(explanation, p, opts, i, overwrite) for p, i in zip(paths, indices, strict=True)]
    if len(written) > 1:
        log.info("%d images: wrote one file each, %s … %s", len(written), written[0].name, written[-1].name)
    return written
