"""The one engine loop: any exception a decoder raises on an item is that item's error row
and the run goes on (issue 18 item 6), on the local engine with and without reader
processes; save kinds come from the output registry (a writer registered later is a kind)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_batch import FAST, tiny_model

from layerscope.batch import run_dataset
from layerscope.batch.config import parse_save, save_kinds
from layerscope.batch.sources import Item, Loaded, ShapesSource, pixel_hash
from layerscope.errors import UsageError


class Hostile(ShapesSource):
    """Shapes samples, of which items 1, 3 and 5 make the 'decoder' raise what Pillow raises
    on malformed TIFF / GIF files."""

    RAISES: ClassVar[dict[int, Exception]] = {
        1: TypeError("Missing dimensions"),
        3: IndexError("list index out of range"),
        5: struct.error("x"),
    }

    def read(self, item: Item, keep=None) -> Loaded:
        if item.ref in self.RAISES:
            raise self.RAISES[item.ref]
        return super().read(item, keep)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_decoder_exception_is_an_error_row(tmp_path: Path, workers: int) -> None:
    model, info = tiny_model()
    opts = {**FAST, "workers": workers}
    r = run_dataset(Hostile(8, size=32), tmp_path / "run", model, info=info, **opts)
    assert (r.done, r.errors) == (8, 3)
    rows = {row["key"]: row["status"] for row in pq.read_table(tmp_path / "run" / "manifest.parquet").to_pylist()}
    assert rows["shapes-1/000001"] == "error: cannot read the item (TypeError: Missing dimensions)"
    assert rows["shapes-1/000003"] == "error: cannot read the item (IndexError: list index out of range)"
    assert rows["shapes-1/000005"].startswith("error: cannot read the item (error")  # struct.error
    assert sum(s == "ok" for s in rows.values()) == 5


def test_save_kinds_follow_the_output_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from layerscope import outputs
    from layerscope.outputs.base import Writer

    assert save_kinds() == [ext.lstrip(".") for ext in outputs.WRITERS]
    with pytest.raises(UsageError, match=r"unknown --save kind 'toy'"):
        parse_save("npz,toy")
    with pytest.raises(UsageError, match=r"Did you mean gif"):
        parse_save("gfi")

    def write_toy(exp, path, options, index, overwrite):
        path.write_text(f"{exp.layers} {np.asarray(exp.cams[exp.layers[0]]).shape}")
        return path

    monkeypatch.setitem(outputs.WRITERS, ".toy", Writer("toy text", write_toy, draws_frames=False))
    assert parse_save("npz,toy") == ("npz", "toy")
    model, info = tiny_model()
    r = run_dataset(shapes=3, out_dir=tmp_path / "run", model=model, info=info, save="toy", **FAST)
    assert (r.done, r.errors) == (3, 0)
    files = sorted((tmp_path / "run" / "items").rglob("*.toy"))
    assert [f.name for f in files] == ["000000.toy", "000001.toy", "000002.toy"]
    assert files[0].read_text() == "['0', '2'] (1, 32, 32)"


def test_pixel_hash_literal() -> None:
    import hashlib

    a = np.zeros((1, 2, 3), np.uint8)
    assert pixel_hash(a) == hashlib.sha256(b"(1, 2, 3)" + bytes(6)).hexdigest()


def test_a_fifo_and_dev_zero_in_a_list_are_error_rows_at_once(tmp_path: Path) -> None:
    """Issue 18 item 7: checked before a byte is read (a FIFO hung the run, /dev/zero ran out of memory)."""
    import os
    import time

    from PIL import Image

    from layerscope.datasets.shapes import make_sample

    os.mkfifo(tmp_path / "pipe.png")
    Image.fromarray(make_sample(1, 0, 32)[0]).save(tmp_path / "ok.png")
    lst = tmp_path / "list.txt"
    lst.write_text("ok.png\npipe.png\n/dev/zero\n")
    model, info = tiny_model()
    t0 = time.monotonic()
    r = run_dataset(lst, tmp_path / "run", model, info=info, **{**FAST, "workers": 1})
    assert time.monotonic() - t0 < 30
    assert (r.done, r.errors) == (3, 2)
    rows = {row["key"]: row["status"] for row in pq.read_table(tmp_path / "run" / "manifest.parquet").to_pylist()}
    assert rows["ok.png"] == "ok"
    assert rows["pipe.png"].endswith("pipe.png: not a regular file (a pipe, socket or device); give an image file")
    assert rows["/dev/zero"] == "error: /dev/zero: not a regular file (a pipe, socket or device); give an image file"
