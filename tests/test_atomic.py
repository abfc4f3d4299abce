"""The one atomic write helper: nothing half-written under a final name, one clear error for
a full disk, stale .part files of a killed run removed by the next write."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerscope.atomic import atomic_file, atomic_path, write_bytes
from layerscope.errors import OutputError


def test_a_full_disk_is_an_output_error_naming_the_file(tmp_path: Path) -> None:
    target = tmp_path / "maps.npz"
    target.write_bytes(b"the old file")

    class FullDisk:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"maps\.npz: cannot write the file: no space left on the device"):
        with atomic_file(target, overwrite=True) as f:
            f.write(b"some")
            FullDisk().write(b"more")
    assert target.read_bytes() == b"the old file"  # the old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npz"]  # no .part left


def test_an_error_inside_leaves_nothing_and_success_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    with pytest.raises(OutputError, match="already exists"):
        write_bytes(target, b"again")


def test_stale_parts_of_a_killed_run_are_removed_by_the_next_write(tmp_path: Path) -> None:
    stale = tmp_path / ".t.gif.abc123.part"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (0, 0))
    fresh = tmp_path / ".t.gif.def456.part"  # another run, writing now: left alone
    fresh.write_bytes(b"being written")
    write_bytes(tmp_path / "t.gif", b"GIF89a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".t.gif.def456.part", "t.gif"]


def test_a_closed_pipe_ends_quietly() -> None:
    """`layerscope methods | head -1`: the reader leaves; no traceback, no error line."""
    done = subprocess.run(
        f"{sys.executable} -m layerscope methods | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.startswith("gradcam") and done.stdout.count("\n") == 1
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
def test_sigterm_ends_a_tour_in_one_line_with_exit_143_and_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "t.gif"
    # at 768² the tour's capture and drawing take seconds, so the signal lands inside the run
    # (at 224² a quiet machine could finish first and a busy one be in interpreter shutdown)
    size = ["--size", "768"]
    cmd = [sys.executable, "-m", "layerscope", "tour", "--model", "vgg16", "--weights", "random", *size, "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(4.0)  # importing torch and building VGG16 takes about this
    if proc.poll() is not None:
        pytest.skip("the tour finished before it could be terminated")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "layerscope: terminated", err
    assert not out.exists() and not any(p.name.endswith(".part") for p in tmp_path.iterdir())


def test_a_full_disk_at_flush_time_is_an_output_error_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"t\.gif: cannot write the file: no space left on the device"):
        write_bytes(tmp_path / "t.gif", b"GIF89a")
    assert list(tmp_path.iterdir()) == []
