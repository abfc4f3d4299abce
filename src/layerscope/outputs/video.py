"""MP4 video through PyAV (FFmpeg inside the wheel): H.264, yuv420p, frames padded to even
width and height (edge repeated), each frame shown for exactly the frame duration
(millisecond time base). Frames are drawn and encoded one at a time."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.atomic import atomic_path
from layerscope.errors import OutputError, UsageError
from layerscope.outputs._registry import register
from layerscope.outputs.base import Writer
from layerscope.render.options import RenderOptions

#: H.264 level 6.2's largest frame side that players handle; more is refused before any work.
MP4_MAX_SIDE = 8192
#: x264's constant quality: 18 is visually lossless for these frames.
CRF = 18


def _even(a: np.ndarray) -> np.ndarray:
    """Pad ``(H, W, 3)`` to even height and width (yuv420p halves both) by repeating the last
    row and column, so no colour bleeds into the edge."""
    h, w = a.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return a
    return np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(path: str | Path, frames: Any, duration: int = 500, overwrite: bool = False) -> int:
    """Encode ``frames`` (an iterable of PIL images, all of one size) as an H.264 MP4, each
    frame ``duration`` ms. Atomic. Returns the frame count."""
    try:
        import av
    except ImportError:
        raise UsageError('MP4 output needs PyAV: pip install av (or "layerscope[video]")') from None
    p = Path(path)
    count = 0
    with atomic_path(p, overwrite, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for fr in frames:
                a = _even(np.asarray(fr.convert("RGB")))
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(1000, duration))
                    stream.width, stream.height = a.shape[1], a.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.time_base = Fraction(1, 1000)
                    stream.options = {"crf": str(CRF), "preset": "medium"}
                    size = a.shape
                elif a.shape != size:
                    raise OutputError(f"{p}: frame {count} is {a.shape[1]}×{a.shape[0]}, not {size[1]}×{size[0]}")
                vf = av.VideoFrame.from_ndarray(a, format="rgb24")
                vf.pts = count * duration
                vf.time_base = Fraction(1, 1000)
                for packet in stream.encode(vf):
                    packet.duration = duration
                    container.mux(packet)
                count += 1
            if stream is None:
                raise UsageError("no frames to write")
            for packet in stream.encode():
                packet.duration = duration
                container.mux(packet)
    return count


def _mp4(exp: Any, path: Path, options: RenderOptions, index: int | None, overwrite: bool) -> Path:
    write_mp4(path, exp.iter_frames(index or 0, options), options.duration, overwrite)
    return path


MP4 = register(
    ".mp4",
    Writer(
        "MP4 video (H.264)",
        _mp4,
        max_side=MP4_MAX_SIDE,
        even=True,
        requires=(("av", 'pip install av (or "layerscope[video]")'),),
    ),
)
