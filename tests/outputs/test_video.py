"""outputs.video: H.264 MP4 through PyAV, decoded back (frame count, durations, size, pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import outputs
from layerscope.errors import OutputError, UsageError
from layerscope.render import RenderOptions

av = pytest.importorskip("av")


def decode(path: Path) -> tuple[list[np.ndarray], list[float], dict[str, object]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
        info = {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "duration": c.duration / 1e6}
        info["size"] = (s.width, s.height)
    return frames, times, info


def test_mp4_frames_durations_and_pixels(tmp_path: Path) -> None:
    from test_outputs import make_exp

    exp = make_exp(1)
    p = exp.save(tmp_path / "tour.mp4", duration=250)
    frames, times, info = decode(p)
    want = exp.frames(0)
    w, h = want[0].size
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["size"] == (w + w % 2, h + h % 2) and all(s % 2 == 0 for s in info["size"])  # type: ignore[attr-defined]
    assert len(frames) == 3 and times == [0.0, 0.25, 0.5]
    assert info["duration"] == pytest.approx(0.75, abs=0.02)
    for got, ref in zip(frames, want, strict=True):
        ref_a = np.asarray(ref).astype(int)
        diff = np.abs(got[:h, :w].astype(int) - ref_a)
        assert diff.mean() < 3  # H.264 at CRF 18, chroma subsampled: close, not exact
    # the frames are told apart: frame 1 is nearer its own reference than frame 0's
    d_own = np.abs(frames[1][:h, :w].astype(int) - np.asarray(want[1])).mean()
    d_other = np.abs(frames[1][:h, :w].astype(int) - np.asarray(want[0])).mean()
    assert d_own < d_other


def test_mp4_odd_sizes_long_durations_and_errors(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (33, 21), (255, 0, 0)), Image.new("RGB", (33, 21), (0, 0, 255))]
    assert outputs.write_mp4(tmp_path / "a.mp4", frames, duration=1500) == 2
    got, times, info = decode(tmp_path / "a.mp4")
    assert info["size"] == (34, 22) and times == [0.0, 1.5]
    assert info["duration"] == pytest.approx(3.0, abs=0.05)
    assert got[1][10, 16, 2] > 200 and got[1][10, 16, 0] < 50  # blue, in RGB order
    assert got[0][:, 33, 0].min() > 200 and got[0][21, :, 0].min() > 200  # padding repeats the edge (red)
    with pytest.raises(OutputError, match="already exists"):
        outputs.write_mp4(tmp_path / "a.mp4", frames)
    with pytest.raises(UsageError, match="no frames"):
        outputs.write_mp4(tmp_path / "b.mp4", [])
    assert not (tmp_path / "b.mp4").exists() and not list(tmp_path.glob(".*part*"))
    with pytest.raises(UsageError, match=r"MP4 video allows \(8,192 per side\)"):
        outputs.check_path(tmp_path / "c.mp4", RenderOptions(max_side=8192))
