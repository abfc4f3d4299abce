"""Sources at scale (issue 22 item 4): Parquet and Arrow tables of image bytes or paths,
saved Hugging Face datasets — streamed by row group, a corrupt row an error row, the run
going on; and the Ray engine reading a table through the same checked reader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from helpers_batch import FAST, tiny_model
from PIL import Image

from layerscope.batch import read_manifest, run_dataset
from layerscope.batch.sources import Item
from layerscope.batch.streams import TABLE_BATCH_ROWS, TableSource, open_stream
from layerscope.datasets.shapes import CLASS_NAMES, make_sample
from layerscope.errors import UsageError


def _png(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_sample(6, i, 40)[0]).save(buf, fmt)
    return buf.getvalue()


def _table(n: int = 10) -> pa.Table:
    images = [_png(i, "PNG" if i % 2 else "JPEG") for i in range(n)]
    images[3] = b"\x89PNG\r\n\x1a\n a truncated row"
    images[5] = None  # no image at all
    labels = [int(make_sample(6, i, 40)[1]) for i in range(n)]
    return pa.table({"image": images, "label": labels, "id": [f"row{i}" for i in range(n)]})


def test_parquet_table_of_bytes_streams_by_row_group_and_records_corrupt_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(_table(10), path, row_group_size=4)
    model, info = tiny_model()
    out = tmp_path / "run"
    r = run_dataset(str(path), out, model, info=info, id_column="id", label_column="label", target="label", **FAST)
    assert (r.done, r.errors) == (10, 2)
    rows = {x["key"]: x for x in read_manifest(out).to_pylist()}
    assert sorted(rows) == sorted(f"row{i}" for i in range(10))
    assert "truncated or corrupt" in rows["row3"]["status"] and "t.parquet[3]" in rows["row3"]["status"]
    assert rows["row5"]["status"] == f"error: {path}[5]: no image in this row"
    assert all(rows[f"row{i}"]["target"] == rows[f"row{i}"]["label"] for i in (0, 1, 9))
    r = run_dataset(str(path), out, model, info=info, id_column="id", label_column="label", target="label",
                    retry_errors=False, **FAST)  # fmt: skip
    assert (r.done, r.skipped) == (0, 10)


def test_a_table_reader_holds_one_batch_of_rows_never_the_table(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    n = 3 * TABLE_BATCH_ROWS + 5
    img = _png(1)
    pq.write_table(pa.table({"image": [img] * n}), path, row_group_size=2 * TABLE_BATCH_ROWS)
    src = TableSource(str(path))
    assert [it.key for it in src.items()][:2] == ["big.parquet/00000000", "big.parquet/00000001"]
    for i in (0, 1, TABLE_BATCH_ROWS + 3, n - 1):  # forward: read on; back: the row group again
        loaded = src.load(Item(f"k{i}", i, "table"))
        assert loaded.error is None and loaded.rgb.shape == (40, 40, 3)
        assert src._state["batch"].num_rows <= TABLE_BATCH_ROWS
    loaded = src.load(Item("k0", 0, "table"))
    assert loaded.error is None and src._state["group"] == 0


def test_a_table_of_paths_and_an_arrow_file_with_label_names(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png(i))
    names = [CLASS_NAMES[i] for i in (2, 0, 2)]
    table = pa.table({"file": ["0.png", "1.png", str(tmp_path / "2.png"), "missing.png"], "cls": [*names, None]})
    with ipc.new_file(str(tmp_path / "t.arrow"), table.schema) as w:
        w.write_table(table, max_chunksize=2)
    src = open_stream(str(tmp_path / "t.arrow"), image_column="file", label_column="cls")
    assert src.class_names == tuple(sorted(set(names)))
    loaded = [src.load(it) for it in src.items()]
    assert [x.error is None for x in loaded] == [True, True, True, False] and "no such file" in loaded[3].error
    assert [x.label for x in loaded[:3]] == [src.class_names.index(n) for n in names]
    np.testing.assert_array_equal(loaded[1].rgb, np.asarray(Image.open(tmp_path / "1.png").convert("RGB")))


def test_bad_table_options_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [_png(0), _png(1)], "id": ["a", "a"]}), path)
    with pytest.raises(UsageError, match="imag"):
        open_stream(str(path), image_column="imgs")
    with pytest.raises(UsageError, match="listed more than once"):
        open_stream(str(path), id_column="id")
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="not a readable Parquet table"):
        open_stream(str(tmp_path / "x.parquet"))
    with pytest.raises(UsageError, match="are for tables"):
        open_stream(str(tmp_path), image_column="image")
    assert open_stream(str(tmp_path)) is None  # a plain folder: the classic sources


def test_a_saved_hugging_face_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(make_sample(7, i, 40)[0]) for i in range(4)]
    labels = [int(make_sample(7, i, 40)[1]) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASS_NAMES))})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict({"test": ds, "train": ds}).save_to_disk(str(tmp_path / "hf"))
    model, info = tiny_model()
    r = run_dataset(str(tmp_path / "hf"), tmp_path / "run", model, info=info, label_column="label", target="label",
                    **FAST)  # fmt: skip
    assert (r.done, r.errors) == (4, 0)
    rows = read_manifest(tmp_path / "run").sort_by("key").to_pylist()
    assert [x["key"] for x in rows] == [f"hf/{i:08d}" for i in range(4)]
    assert [x["label"] for x in rows] == labels == [x["target"] for x in rows]
    with pytest.raises(UsageError, match="split"):
        open_stream(str(tmp_path / "hf"), split="validation")


@pytest.mark.slow
def test_the_ray_engine_reads_a_table_through_the_same_reader(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    path = tmp_path / "t.parquet"
    pq.write_table(_table(8), path, row_group_size=3)
    model, info = tiny_model()
    kw = {**FAST, "workers": 0}
    local = run_dataset(str(path), tmp_path / "local", model, info=info, id_column="id", **kw)
    ray = run_dataset(str(path), tmp_path / "ray", model, info=info, id_column="id", engine="ray", **kw)
    assert (ray.done, ray.errors) == (local.done, local.errors) == (8, 2)
    a = read_manifest(tmp_path / "local").sort_by("key").select(["key", "status", "predicted"])
    b = read_manifest(tmp_path / "ray").sort_by("key").select(["key", "status", "predicted"])
    assert a.equals(b)
