"""The manifest sink's batch write: what it computes for all maps of a batch together (the
maps' statistics' inputs, the class means' small maps, the pointing game) must give the rows
and sums that writing the same items one at a time gives — whatever the batch mixes (maps of
two shapes, items with and without a mask, a bad mask, an error row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from layerscope.batch import fs, stats
from layerscope.batch.sink import ManifestSink, RunContext

LAYERS = ["a", "b"]


def _payload(i: int, rng: np.random.Generator, side: int, mask: np.ndarray | None) -> dict:
    cams = {"a": np.maximum(rng.normal(size=(side, side)), 0).astype(np.float32),
            "b": rng.random((3, 3)).astype(np.float32)}  # fmt: skip
    if i == 3:
        cams["a"] = np.zeros((side, side), np.float32)  # a flat map: no entropy, peak 0
    return {
        "key": f"item{i}", "source": f"src{i}", "content_hash": f"h{i}", "label": i % 2, "error": None,
        "predicted": i % 2, "predicted_probability": 0.9, "target": i % 2, "target_probability": 0.9,
        "target_score": 2.0, "cams": cams, "flat": {name: i == 3 and name == "a" for name in LAYERS},
        "shapes": {name: cams[name].shape for name in LAYERS}, "mask": mask,
    }  # fmt: skip


def _batch() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(9):
        side = 8 if i % 3 else 5  # two shapes of layer a in one batch
        mask = None
        if i in (1, 2, 4, 5, 7):
            mask = np.zeros((16, 16), bool)
            mask[4:12, 4:12] = True
        if i == 8:
            mask = np.zeros((16, 16), np.uint8)  # not boolean: pointing_game refuses it
        out.append(_payload(i, rng, side, mask))
    out.append({"key": "broken", "source": "x", "content_hash": None, "label": None, "error": "cannot decode"})
    return out


def _write(run: Path, batched: bool) -> tuple[list[dict], stats.SummarySums]:
    run.mkdir()
    ctx = RunContext(run_dir=fs.run_dir(run), layers=LAYERS, method="gradcam", class_names=["zero", "one"],
                     save=(), tag="all", commit_every=1000, writer="test")  # fmt: skip
    sink = ManifestSink(ctx)
    payloads = _batch()
    if batched:
        sink.write(payloads)
    else:
        for p in payloads:
            sink.add(p)
    sums = sink.sums
    rows = list(sink.rows)
    sink.commit()
    return rows, sums


def test_batch_write_equals_one_item_at_a_time(tmp_path: Path) -> None:
    rows_b, sums_b = _write(tmp_path / "batched", True)
    rows_1, sums_1 = _write(tmp_path / "single", False)
    assert len(rows_b) == len(rows_1) == 10
    for rb, r1 in zip(rows_b, rows_1, strict=True):
        assert rb.keys() == r1.keys()
        for k in rb:
            assert rb[k] == r1[k], (rb["key"], k)
    # the rows are the map statistics by hand, and the pointing game where a mask is given
    by_key = {r["key"]: r for r in rows_b}
    payloads = {p["key"]: p for p in _batch()}
    for key in ("item0", "item1", "item5"):
        want = stats.map_stats(payloads[key]["cams"]["a"])
        assert {k: by_key[key][f"a/{k}"] for k in want} == want
    assert by_key["item0"]["a/pointing"] is None and by_key["item1"]["a/pointing"] in (True, False)
    assert by_key["item3"]["a/entropy"] is None
    assert by_key["item8"]["status"].startswith("error") and by_key["broken"]["status"] == "error: cannot decode"
    assert sums_b.counts == sums_1.counts and sums_b.counts
    for key, s in sums_1.sums.items():
        np.testing.assert_allclose(sums_b.sums[key], s, rtol=0, atol=1e-12)
    # the batch's small maps are each map's own
    cams = np.stack([payloads[f"item{i}"]["cams"]["a"] for i in (1, 2, 4, 5)])
    for j, small in enumerate(stats.normalised_small(cams)):
        np.testing.assert_array_equal(small, stats.normalised_small(cams[j]))
    # what was committed is what was held
    table = pq.read_table(next((tmp_path / "batched" / "manifest" / "all").glob("part-*.parquet")))
    assert table.column("key").to_pylist() == [r["key"] for r in rows_b]


def test_normalised_small_of_a_map_without_mass() -> None:
    assert not stats.normalised_small(np.zeros((4, 4))).any()
    both = stats.normalised_small(np.stack([np.zeros((4, 4)), np.eye(4)]))
    assert not both[0].any() and both[1].max() == pytest.approx(1.0)
