"""The run's sink: injective output names (issue 18 item 2), Datasink-shaped calls, and a
disk-full write that ends the run rather than becoming one item's error."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers_batch import FAST, tiny_model
from PIL import Image

from layerscope.batch import run_dataset
from layerscope.batch.sink import is_fatal, output_name
from layerscope.datasets.shapes import make_sample
from layerscope.errors import OutputError

CLASHING = [("x:y.png", "x_y.png"), ("a\\b.png", "a/b.png"), ("./a.jpg", "a.jpg")]


def test_output_names_are_injective() -> None:
    for changed, clean in CLASHING:
        assert output_name(clean) == clean  # a clean relative key is its own name
        assert output_name(changed) != output_name(clean)
        assert output_name(changed).startswith(clean + "~") and len(output_name(changed)) == len(clean) + 11
    names = [k for pair in CLASHING for k in pair] + ["/abs/a.jpg", "../a.jpg", "a//b.png"]
    assert len({output_name(k) for k in names}) == len(names)
    assert ".." not in output_name("../../etc/passwd").split("/")
    assert output_name("cifar10-test/00001") == "cifar10-test/00001"


def test_list_file_entries_that_normalise_alike_get_distinct_files(tmp_path: Path) -> None:
    model, info = tiny_model()
    imgs = tmp_path / "imgs"
    (imgs / "a").mkdir(parents=True)
    for i, name in enumerate(["x:y.png", "x_y.png", "a\\b.png", "a/b.png", "a.jpg"]):
        rgb, _, _ = make_sample(5, i, 32)
        Image.fromarray(rgb).save(imgs / name, format="PNG" if name.endswith("png") else "JPEG")
    lst = imgs / "list.txt"
    lst.write_text("x:y.png\nx_y.png\na\\b.png\na/b.png\na.jpg\n./a.jpg\n")
    out = tmp_path / "run"
    r = run_dataset(lst, out, model, info=info, **FAST)
    assert (r.done, r.errors) == (6, 0)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    files = [row["outputs"][0] for row in rows]
    assert len(set(files)) == 6 and all((out / f).is_file() for f in files)
    by_key = {row["key"]: row["outputs"][0] for row in rows}
    assert by_key["x_y.png"] == "items/x_y.png.npz" and by_key["x:y.png"].startswith("items/x_y.png~")


def test_disk_errors_are_fatal_item_errors_are_not() -> None:
    assert is_fatal(OSError(errno.ENOSPC, "No space left on device"))
    assert is_fatal(OutputError("items/a.npz: no space left on the device"))
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as inner:
            raise OutputError("cannot write") from inner
    except OutputError as e:
        assert is_fatal(e)
    assert not is_fatal(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert not is_fatal(ValueError("bad map"))


@pytest.mark.parametrize("engine_writers", [1, 2])
def test_a_full_disk_ends_the_run_within_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_writers):
    """Issue 18 item 9: the writer fails (ENOSPC); the run exits with that error, fast."""
    import time

    from layerscope.batch import sink

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink, "_save", full)  # the writer processes are forked: they see it
    model, info = tiny_model()
    t0 = time.monotonic()
    with pytest.raises(OutputError, match="No space left on device"):
        run_dataset(shapes=64, out_dir=tmp_path / "run", model=model, info=info, writers=engine_writers, **FAST)
    assert time.monotonic() - t0 < 20
