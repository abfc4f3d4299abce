"""A detector in a data-set run (issue 21 item 3): each item's detections — and, for a box
target, the explained box — are stored in the manifest, equal to what ``explain`` reports
for the same image."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import layerscope
from layerscope.batch import run_dataset
from layerscope.datasets.scenes import make_scenes

pytest.importorskip("pyarrow")


def test_a_detector_runs_detections_are_in_the_manifest(tmp_path: Path) -> None:
    images, _, _ = make_scenes(3, seed=5)
    src = tmp_path / "scenes"
    src.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(src / f"scene{i}.png")
    model = layerscope.load_model("demo-detector")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_dataset(src, tmp_path / "run", model, save="none", workers=0, progress="none")
    assert (result.done, result.errors) == (3, 0)
    table = layerscope.open_run(tmp_path / "run").manifest.to_pylist()
    for row in table:
        exp = layerscope.explain(model, str(src / row["key"]), layers="neck")
        want = exp.detections[0]
        got = row["detections"]
        assert len(got) == len(want["boxes"]) >= 1
        np.testing.assert_allclose([d["box"] for d in got], want["boxes"], atol=1e-3)
        assert [d["label"] for d in got] == [int(v) for v in want["labels"]]
        np.testing.assert_allclose([d["score"] for d in got], want["scores"], atol=1e-5)
        assert row["explained_box"] is None  # no box target: each image's best detection explained


def test_other_models_leave_the_columns_empty(tmp_path: Path) -> None:
    model = layerscope.load_model("demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_dataset(shapes=2, out_dir=tmp_path / "run", model=model, save="none", workers=0, progress="none")
    rows = layerscope.open_run(tmp_path / "run").manifest.to_pylist()
    assert [r["detections"] for r in rows] == [None, None] and [r["explained_box"] for r in rows] == [None, None]
