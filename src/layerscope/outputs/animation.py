"""Animations: GIF (one shared palette), APNG and WebP (lossless, full colour).

The GIF writer draws the frames twice, one at a time — a first pass samples their pixels for
the shared 256-colour palette, the second quantises and writes each frame — and the APNG
writer compresses and writes each frame as it is drawn, so only one frame is in memory at
once. Pillow's WebP encoder takes every frame at once: it holds the uint8 frames
(``max_side`` bounds their size).
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image

from layerscope.atomic import atomic_file
from layerscope.errors import UsageError
from layerscope.outputs._registry import register
from layerscope.outputs.base import Writer
from layerscope.render.options import MAX_DURATION_MS, MIN_DURATION_MS, RenderOptions

#: GIF and WebP store a frame's width and height in 16 and 14 bits.
GIF_MAX_SIDE = 65_535
WEBP_MAX_SIDE = 16_383
#: At most this many pixels (over all frames) are sampled to build the GIF palette.
PALETTE_SAMPLE = 1_000_000

Frames = Sequence[Image.Image] | Callable[[], Iterable[Image.Image]]


def _iterate(frames: Frames) -> Iterable[Image.Image]:
    return frames() if callable(frames) else frames


def shared_palette(frames: Frames, n_frames: int | None = None) -> Image.Image:
    """One 256-colour palette for all frames, so colours do not flicker between them: the
    median cut of (a regular sample of at most :data:`PALETTE_SAMPLE` pixels of) every frame."""
    samples = []
    n = n_frames or 16
    for f in _iterate(frames):
        step = max(1, math.ceil(math.sqrt(f.width * f.height * n / PALETTE_SAMPLE)))
        rgb = f.convert("RGB")
        samples.append(rgb if step == 1 else _subsample(rgb, step))
    if not samples:
        raise UsageError("no frames to write")
    w = max(s.width for s in samples)
    h = sum(s.height for s in samples)
    montage = Image.new("RGB", (w, h))
    y = 0
    for s in samples:
        montage.paste(s, (0, y))
        y += s.height
    return montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def _subsample(im: Image.Image, step: int) -> Image.Image:
    """Every ``step``-th pixel in each direction (real pixels, no averaging)."""
    import numpy as np

    return Image.fromarray(np.ascontiguousarray(np.asarray(im)[::step, ::step]))


def gif_duration(duration: int) -> int:
    """The duration a GIF stores: hundredths of a second, so ``duration`` rounded to 10 ms."""
    return max(MIN_DURATION_MS, round(duration / 10.0) * 10)


def write_gif(f: IO[bytes], frames: Frames, duration: int = 500, loop: int = 0, n_frames: int | None = None) -> int:
    """A GIF with one frame per image, ``duration`` ms each (rounded to 10 ms: GIF counts in
    hundredths of a second), looping ``loop`` times (0 = forever), one global palette.
    Identical consecutive frames stay separate frames (Pillow's own writer would merge them,
    changing the frame count). ``frames`` may be a sequence or a function returning a fresh
    iterator (then frames are drawn twice, one at a time; ``n_frames`` says how many there
    will be, to size the palette sample). Returns the frame count."""
    from PIL import GifImagePlugin

    _check_duration(duration, " (GIF counts in hundredths of a second)")
    if not callable(frames):
        frames = list(frames)
        if not frames:
            raise UsageError("no frames to write")
    pal = shared_palette(frames, n_frames if callable(frames) else len(frames))
    count = 0
    for fr in _iterate(frames):
        q = fr.convert("RGB").quantize(palette=pal, dither=Image.Dither.NONE)
        if count == 0:
            header, _ = GifImagePlugin.getheader(q, info={"loop": loop, "optimize": False})
            for chunk in header:
                f.write(chunk)
        for chunk in GifImagePlugin.getdata(q, duration=gif_duration(duration), disposal=1):
            f.write(chunk)
        count += 1
    f.write(b";")
    return count


def _check_duration(duration: int, why: str = "") -> None:
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise UsageError(f"the frame duration must be a whole number of milliseconds, not {duration!r}")
    if not MIN_DURATION_MS <= duration <= MAX_DURATION_MS:
        raise UsageError(
            f"the frame duration must be between {MIN_DURATION_MS} and {MAX_DURATION_MS} ms, not {duration}{why}"
        )


def _png_chunks(data: bytes) -> Iterable[tuple[bytes, bytes]]:
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        yield data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def _apng_delay(duration: int) -> tuple[int, int]:
    """APNG's ``delay_num / delay_den`` seconds (16 bits each) for ``duration`` ms."""
    if duration <= 0xFFFF:
        return duration, 1000
    if round(duration / 10) <= 0xFFFF:
        return round(duration / 10), 100
    return round(duration / 1000), 1


def write_apng(f: IO[bytes], frames: Frames, duration: int = 500, n_frames: int | None = None, loop: int = 0) -> int:
    """An APNG written one frame at a time: each frame is compressed by Pillow's PNG encoder
    and its data stored as the frame's ``IDAT``/``fdAT`` chunks. ``frames`` as for
    :func:`write_gif`; ``n_frames`` is needed up front when it is a function (the count goes
    in the header). Returns the frame count."""
    _check_duration(duration)
    if not callable(frames):
        frames = list(frames)
        n_frames = len(frames)
    if not n_frames:
        raise UsageError("no frames to write")

    def chunk(tag: bytes, data: bytes) -> None:
        f.write(struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    num, den = _apng_delay(duration)
    seq = count = 0
    size = None
    for fr in _iterate(frames):
        if count == n_frames:
            raise ValueError(f"more frames than the {n_frames} announced")
        buf = io.BytesIO()
        fr.convert("RGB").save(buf, format="PNG", compress_level=6)
        chunks = list(_png_chunks(buf.getvalue()))
        if size is None:
            size = fr.size
            f.write(b"\x89PNG\r\n\x1a\n")
            chunk(b"IHDR", chunks[0][1])
            chunk(b"acTL", struct.pack(">II", n_frames, loop))
        elif fr.size != size:
            raise ValueError(f"frame {count} is {fr.size}, not {size}")
        chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, size[0], size[1], 0, 0, num, den, 0, 0))
        seq += 1
        for tag, data in chunks:
            if tag != b"IDAT":
                continue
            if count == 0:
                chunk(b"IDAT", data)
            else:
                chunk(b"fdAT", struct.pack(">I", seq) + data)
                seq += 1
        count += 1
    if count != n_frames:
        raise ValueError(f"{count} frames, not the {n_frames} announced")
    chunk(b"IEND", b"")
    return count


def _write_pillow(f: IO[bytes], frames: Sequence[Image.Image], fmt: str, duration: int) -> None:
    if not frames:
        raise UsageError("no frames to write")
    _check_duration(duration)
    extra: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {"default_image": False}
    first, *rest = [fr.convert("RGB") for fr in frames]
    first.save(f, format=fmt, save_all=True, append_images=rest, duration=duration, loop=0, **extra)


def write_animation(
    path: str | os.PathLike[str],
    frames: Sequence[Image.Image],
    duration: int = 500,
    overwrite: bool = False,
) -> Path:
    """Write frames as an animation chosen by extension: ``.gif``, ``.webp`` or ``.png``
    (APNG). Atomic; refuses an existing file unless ``overwrite``."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in ANIMATIONS:
        raise UsageError(f"{p}: unsupported animation type {ext or '(none)'}; use one of {', '.join(ANIMATIONS)}")
    if not frames:
        raise UsageError("no frames to write")
    _check_duration(duration, " (GIF counts in hundredths of a second)" if ext == ".gif" else "")
    with atomic_file(p, overwrite) as f:
        if ext == ".gif":
            write_gif(f, frames, duration)
        elif ext == ".png":
            write_apng(f, frames, duration)
        else:
            _write_pillow(f, frames, "WEBP", duration)
    return p


def _gif(exp: Any, path: Path, options: RenderOptions, index: int | None, overwrite: bool) -> Path:
    if options.duration % 10:
        warnings.warn(
            f"GIF stores durations in hundredths of a second: {options.duration} ms is written as "
            f"{gif_duration(options.duration)} ms (APNG, WebP and MP4 keep it)",
            stacklevel=4,
        )
    with atomic_file(path, overwrite) as f:
        write_gif(f, lambda: exp.iter_frames(index or 0, options), options.duration, n_frames=exp.n_frames)
    return path


def _apng(exp: Any, path: Path, options: RenderOptions, index: int | None, overwrite: bool) -> Path:
    with atomic_file(path, overwrite) as f:
        write_apng(f, lambda: exp.iter_frames(index or 0, options), options.duration, n_frames=exp.n_frames)
    return path


def _webp(exp: Any, path: Path, options: RenderOptions, index: int | None, overwrite: bool) -> Path:
    frames = list(exp.iter_frames(index or 0, options))  # Pillow's WebP encoder takes them all at once
    with atomic_file(path, overwrite) as f:
        _write_pillow(f, frames, "WEBP", options.duration)
    return path


GIF = register(".gif", Writer("GIF animation (256 colours, one shared palette)", _gif, max_side=GIF_MAX_SIDE))
APNG = register(".png", Writer("APNG animation (full colour, lossless)", _apng, max_side=2**31 - 1))
WEBP = register(".webp", Writer("WebP animation (full colour, lossless)", _webp, max_side=WEBP_MAX_SIDE))

#: The extensions :func:`write_animation` takes.
ANIMATIONS = (".gif", ".png", ".webp")
