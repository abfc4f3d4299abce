"""The columnar maps store (issue 22 item 2): maps written == maps read (float32 exactly,
float16 within its rounding), files whole or absent, orphans removed, a killed run rerun
lists every item once with its maps, a corrupt item is an error row."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_batch import FAST, tiny_model
from test_crash import N, _alive, _children, _start, _wait_for_parts
from test_engine import Hostile

import layerscope
from layerscope.batch import maps_store, run_dataset
from layerscope.batch.config import RunConfig, parse_save
from layerscope.errors import UsageError

#: float16 keeps 11 significant bits, and the store divides each map by its peak first: a
#: value is off by at most 2⁻¹¹ of itself (and float32 rounding), or, below 6.1e-5 of the
#: peak (float16's subnormals), by 2⁻²⁵ of the peak.
F16_REL, F16_PEAK = 2.0**-11 + 2.0**-23, 2.0**-25


def close16(got: np.ndarray, want: np.ndarray) -> bool:
    peak = float(np.abs(want).max())
    return bool(np.all(np.abs(got - want) <= F16_REL * np.abs(want) + F16_PEAK * peak))


def _maps(rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    return [
        {"a": rng.normal(size=(5, 7)).astype(np.float32) * 10.0 ** rng.integers(-6, 4), "b": rng.random((2, 3))}
        for _ in range(n)
    ]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_shard_round_trips(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    items = _maps(rng, maps_store.FLUSH_ROWS * 2 + 5)  # three record batches
    path = tmp_path / "maps" / "all" / "part-000001.arrow"
    w = maps_store.ShardWriter(path, ["a", "b"], dtype)
    for i, cams in enumerate(items):
        assert w.fits(cams) and w.add(f"k{i}", cams) == i
    assert not path.exists()  # nothing under the final name before the commit
    w.commit()
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]
    table = maps_store.open_shard(path)
    assert table.column("key").to_pylist() == [f"k{i}" for i in range(len(items))]
    for i, cams in enumerate(items):
        got = maps_store.row_maps(table, i, ["a", "b"])
        for name, want in cams.items():
            want32 = want.astype(np.float32)
            assert got[name].dtype == np.float32 and got[name].shape == want.shape
            assert np.array_equal(got[name], want32) if dtype == "float32" else close16(got[name], want32)
    stacked = np.concatenate(maps_store.column_maps(table, "a"))
    for cam, item in zip(stacked, items, strict=True):
        want = item["a"].astype(np.float32)
        assert np.array_equal(cam, want) if dtype == "float32" else close16(cam, want)


def test_an_aborted_shard_leaves_nothing_and_shapes_must_match(tmp_path: Path) -> None:
    path = tmp_path / "part-000001.arrow"
    w = maps_store.ShardWriter(path, ["a", "b"])
    cams = _maps(np.random.default_rng(1), maps_store.FLUSH_ROWS + 1)
    for i, c in enumerate(cams):
        w.add(str(i), c)
    assert next(p.name for p in tmp_path.iterdir()).endswith(".part")  # streamed to a temporary file
    assert not w.fits({"a": np.zeros((5, 6)), "b": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="shapes differ"):
        w.add("x", {"a": np.zeros((5, 6)), "b": np.zeros((2, 3))})
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_orphans_are_removed_and_dtype_checked(tmp_path: Path) -> None:
    (tmp_path / "maps" / "all").mkdir(parents=True)
    (tmp_path / "manifest" / "all").mkdir(parents=True)
    for n in (1, 2):
        (tmp_path / "maps" / "all" / f"part-00000{n}.arrow").write_bytes(b"x")
    (tmp_path / "manifest" / "all" / "part-000001.parquet").write_bytes(b"x")
    assert maps_store.remove_orphans(tmp_path, "all") == 1
    assert [p.name for p in (tmp_path / "maps" / "all").iterdir()] == ["part-000001.arrow"]
    assert maps_store.check_dtype(np.float16) == "float16" and maps_store.check_dtype("f4") == "float32"
    with pytest.raises(UsageError, match="maps-dtype"):
        RunConfig(maps_dtype="int8").check()
    assert parse_save("maps,npz") == ("maps", "npz")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_run_stores_the_maps_it_computed(tmp_path: Path, dtype: str) -> None:
    """The store holds the very maps of the per-item .npz (same run): float32 exactly."""
    model, info = tiny_model()
    out = tmp_path / "run"
    r = run_dataset(shapes=40, out_dir=out, model=model, info=info, save="maps,npz", maps_dtype=dtype, **FAST)
    assert (r.done, r.errors) == (40, 0)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {row["maps_shard"] for row in rows} == {"maps/all/part-000001.arrow"}
    assert [row["maps_row"] for row in rows] == list(range(40))  # the shapes keys are in source order
    run = layerscope.open_run(out)
    for row in rows:
        got = run.maps(row["key"])
        with np.load(out / row["outputs"][0]) as z:
            for name in run.layers:
                want = z[f"cam/{name}"][0]
                assert np.array_equal(got[name], want) if dtype == "float32" else close16(got[name], want)
    with pytest.raises(UsageError, match="maps_dtype"):  # another dtype is another run
        run_dataset(
            shapes=40,
            out_dir=out,
            model=model,
            info=info,
            save="maps,npz",
            maps_dtype="float32" if dtype == "float16" else "float16",
            **FAST,
        )


def test_a_corrupt_item_is_an_error_row_and_the_run_goes_on(tmp_path: Path) -> None:
    model, info = tiny_model()
    out = tmp_path / "run"
    r = run_dataset(Hostile(12, size=32), out, model, info=info, save="maps", commit_every=4, **FAST)
    assert (r.done, r.errors) == (12, 3)
    rows = {row["key"]: row for row in pq.read_table(out / "manifest.parquet").to_pylist()}
    bad = rows["shapes-1/000003"]
    assert bad["status"].startswith("error: ") and bad["maps_shard"] is None and bad["maps_row"] is None
    run = layerscope.open_run(out)
    assert len(run.items) == 12 and len(run.layer("2")) == 9
    with pytest.raises(UsageError, match="has no maps"):
        run.maps("shapes-1/000003")
    assert run.maps("shapes-1/000004")["2"].shape == (16, 16)


@pytest.mark.slow  # about 20 s: a 520-item run, killed, then finished
def test_a_killed_run_leaves_whole_shards_and_the_rerun_lists_each_item_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, out, save="maps")
    _wait_for_parts(out, proc, count=random.randint(1, 4))
    # at once: on a quiet machine this run commits its 17 parts within about 0.3 s of the first
    time.sleep(random.uniform(0.0, 0.02))
    helpers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    shards = sorted((out / "maps" / "all").glob("part-*.arrow"))
    assert shards
    for p in shards:  # every file under a final name is whole (readable to its end)
        table = maps_store.open_shard(p)
        assert table.num_rows > 0 and table.column("2").chunk(0).to_numpy_ndarray().shape[1:] == (16, 16)
    committed = set()
    for part in (out / "manifest" / "all").glob("part-*.parquet"):
        committed.update(pq.read_table(part, columns=["key"]).column("key").to_pylist())
    assert 0 < len(committed) < N
    rerun = _start(tmp_path, out, save="maps")
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    done, skipped, errors = map(int, stdout.split())
    assert (skipped, done, errors) == (len(committed), N - len(committed), 0)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["key"] for r in rows] == [f"shapes-1/{i:06d}" for i in range(N)]  # each once
    assert not [p for p in out.rglob("*") if ".part" in p.name]
    parts = {p.stem for p in (out / "manifest" / "all").glob("part-*.parquet")}
    assert {p.stem for p in (out / "maps" / "all").glob("*.arrow")} == parts  # no orphan, none missing
    run = layerscope.open_run(out)
    for row in rows:
        table = maps_store.open_shard(out / row["maps_shard"])
        assert table.column("key")[row["maps_row"]].as_py() == row["key"]
    assert run.layer("2").stack().shape == (N, 16, 16)
