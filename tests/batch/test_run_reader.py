"""``layerscope.open_run``: the manifest, one item's maps, one layer across items — reading
only the maps file an item is in, and a layer's column without copying it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers_batch import FAST, tiny_model

import layerscope
from layerscope.batch import maps_store, run_dataset
from layerscope.errors import UsageError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, info = tiny_model()
    out = tmp_path_factory.mktemp("reader") / "run"
    run_dataset(shapes=50, out_dir=out, model=model, info=info, save="maps,npz", commit_every=16, **FAST)
    return out


def test_manifest_items_and_pandas(run_dir: Path) -> None:
    run = layerscope.open_run(run_dir)
    assert isinstance(run.manifest, pa.Table) and run.manifest.num_rows == 50
    assert run.items == sorted(run.items) and len(run.items) == 50 and run.layers == ["0", "2"]
    assert "50 items" in repr(run)
    pytest.importorskip("pandas")
    df = run.to_pandas()
    assert list(df["key"]) == run.items and "maps_shard" in df.columns


def test_one_item_reads_only_its_maps_file(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = maps_store.open_shard
    monkeypatch.setattr(maps_store, "open_shard", lambda p: (opened.append(Path(p).name), real(p))[1])
    run = layerscope.open_run(run_dir)
    key = run.items[20]  # in the second file (16 items a part)
    maps = run.maps(key)
    assert opened == ["part-000002.arrow"]
    with np.load(run_dir / "items" / f"{key}.npz") as z:
        for name in run.layers:
            assert np.array_equal(maps[name], z[f"cam/{name}"][0])
            assert not maps[name].flags.writeable  # a view into the memory map
    assert run.maps(20)["2"].shape == (16, 16) and opened == ["part-000002.arrow"]  # kept open
    with pytest.raises(KeyError):
        run.maps("nope")


def test_one_layer_across_items_without_a_copy(run_dir: Path) -> None:
    run = layerscope.open_run(run_dir)
    layer = run.layer("0")
    assert len(layer) == 50 and layer.keys == run.items
    before = pa.total_allocated_bytes()
    sizes = [maps.shape for _, maps in layer.batches()]
    assert sum(s[0] for s in sizes) == 50 and all(s[1:] == (32, 32) for s in sizes)
    assert pa.total_allocated_bytes() - before < 32 * 32 * 4  # the maps were not copied into memory
    stacked = layer.stack()
    assert stacked.shape == (50, 32, 32) and stacked.dtype == np.float32
    for (key, cam), again in zip(layer.items(), stacked, strict=True):
        assert np.array_equal(cam, again) and np.array_equal(cam, run.maps(key)["0"])
    assert sum(1 for _ in layer) == 50
    with pytest.raises(UsageError, match="layer"):
        run.layer("1")


def test_a_run_without_the_store_reads_its_npz_files(tmp_path: Path) -> None:
    model, info = tiny_model()
    out = tmp_path / "run"
    run_dataset(shapes=4, out_dir=out, model=model, info=info, **FAST)  # save="npz"
    run = layerscope.open_run(out)
    assert run.maps(0)["2"].shape == (16, 16) and len(run.layer("2")) == 0
    with pytest.raises(UsageError, match="holds no run"):
        layerscope.open_run(tmp_path)
