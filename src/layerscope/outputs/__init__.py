"""Writers, chosen by file extension. Every write is atomic: the data goes to a temporary
file beside the target, which is renamed over it only when complete, so an error or an
interrupt never leaves a half-written file under the final name. An existing file is
refused unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from layerscope.errors import OutputError, UsageError

ANIMATION_EXTENSIONS = (".gif", ".webp", ".png")


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early, before any work, if ``path`` exists (without overwrite) or its folder
    cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory; give a file name such as {p / 'grad_cam.gif'}")
    if p.exists() and not overwrite:
        raise OutputError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{parent}: the output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: the output folder is not writable")
    return p


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path``; on success it replaces ``path``."""
    p = check_writable(path, overwrite)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    except OSError as e:
        raise OutputError(f"{p.parent}: cannot write there: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if p.exists() and not overwrite:  # appeared while we worked
            raise OutputError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
        os.replace(tmp, p)
        os.chmod(p, 0o666 & ~_umask())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def shared_palette(frames: Sequence[Image.Image]) -> Image.Image:
    """One 256-colour palette for all frames, so colours do not flicker between them."""
    w = max(f.width for f in frames)
    h = sum(f.height for f in frames)
    montage = Image.new("RGB", (w, h))
    y = 0
    for f in frames:
        montage.paste(f.convert("RGB"), (0, y))
        y += f.height
    return montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def write_gif(f: IO[bytes], frames: Sequence[Image.Image], duration: int = 500, loop: int = 0) -> None:
    """A GIF with one frame per image, ``duration`` ms each, looping ``loop`` times (0 =
    forever), one global palette. Identical consecutive frames stay separate frames (Pillow's
    own writer would merge them, changing the frame count).
    """
    from PIL import GifImagePlugin

    pal = shared_palette(frames)
    quant = [fr.convert("RGB").quantize(palette=pal, dither=Image.Dither.NONE) for fr in frames]
    header, _ = GifImagePlugin.getheader(quant[0], info={"loop": loop, "optimize": False})
    for chunk in header:
        f.write(chunk)
    for q in quant:
        for chunk in GifImagePlugin.getdata(q, duration=duration, disposal=1):
            f.write(chunk)
    f.write(b";")


def write_animation(
    path: str | os.PathLike[str],
    frames: Sequence[Image.Image],
    duration: int = 500,
    overwrite: bool = False,
) -> Path:
    """Write frames as an animation chosen by extension: ``.gif``, ``.webp`` or ``.png``
    (APNG). Atomic; refuses an existing file unless ``overwrite``."""
    if not frames:
        raise UsageError("no frames to write")
    if duration <= 0:
        raise UsageError(f"the frame duration must be positive, not {duration} ms")
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in ANIMATION_EXTENSIONS:
        raise UsageError(
            f"{p}: unsupported animation type {ext or '(none)'}; use one of {', '.join(ANIMATION_EXTENSIONS)}"
        )
    with atomic_file(p, overwrite) as f:
        if ext == ".gif":
            write_gif(f, frames, duration)
        else:
            fmt = "WEBP" if ext == ".webp" else "PNG"
            extra = {"lossless": True} if fmt == "WEBP" else {"default_image": False}
            frames[0].save(
                f,
                format=fmt,
                save_all=True,
                append_images=list(frames[1:]),
                duration=duration,
                loop=0,
                **extra,
            )
    return p


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], overwrite: bool = False) -> Path:
    """Save named arrays as a compressed ``.npz``, atomically."""
    with atomic_file(path, overwrite) as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def write_with(path: str | os.PathLike[str], fn: Callable[[IO[bytes]], None], overwrite: bool = False) -> Path:
    """Atomically write whatever ``fn(file)`` writes."""
    with atomic_file(path, overwrite) as f:
        fn(f)
    return Path(path)
