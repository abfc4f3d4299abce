"""The Ray Data engine gives the local engine's manifest and maps (local Ray, 2 CPUs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_batch import tiny_model

from layerscope.batch import run_dataset

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.slow,  # starting Ray and its workers takes 30-70 s on 2 cores
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # Ray Data's own settings
]


def test_ray_engine_matches_local(tmp_path: Path) -> None:
    model, info = tiny_model()
    common = {"shapes": 100, "model": model, "info": info, "target": "label", "progress": "none", "batch_size": 16}
    local = run_dataset(out_dir=tmp_path / "local", workers=1, **common)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_dataset(out_dir=tmp_path / "ray", engine="ray", **common)
    finally:
        ray.shutdown()
    assert local.done == remote.done == 100 and remote.errors == 0
    a = pq.read_table(tmp_path / "local" / "manifest.parquet").to_pylist()
    b = pq.read_table(tmp_path / "ray" / "manifest.parquet").to_pylist()
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k, v in ra.items():
            if isinstance(v, float):
                assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
            else:
                assert rb[k] == v, k
        with np.load(tmp_path / "local" / ra["outputs"][0]) as za, np.load(tmp_path / "ray" / rb["outputs"][0]) as zb:
            for name in ("cam/0", "cam/2"):
                np.testing.assert_allclose(za[name], zb[name], rtol=1e-4, atol=1e-6)
    with np.load(tmp_path / "local/summary/mean_maps.npz") as za, np.load(tmp_path / "ray/summary/mean_maps.npz") as zb:
        assert za.files == zb.files
        np.testing.assert_allclose(za["correct/2"], zb["correct/2"], rtol=1e-4, atol=1e-6)
