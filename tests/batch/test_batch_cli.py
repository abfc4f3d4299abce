"""``layerscope batch`` and ``layerscope batch-merge`` on the built-in demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import run_cli
from layerscope.datasets.shapes import make_sample
from layerscope.evaluate.localisation import pointing_game


def test_batch_shapes_demo_pointing_report_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["batch", "--shapes", "20", "-o", str(out), "--target", "label", "--report", "--progress", "none"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "20 done (0 errors), 0 skipped" in err and "manifest:" in stdout
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(rows) == 20
    for r in rows:
        i = int(r["key"].rsplit("/", 1)[1])
        _, label, mask = make_sample(1, i, 96)
        with np.load(out / r["outputs"][0]) as z:
            cam = z["cam/block5_conv3"][0]
        assert r["block5_conv3/pointing"] == bool(pointing_game(cam[None], mask[None])[0])
        assert r["label"] == label == r["target"]
    # the shipped demo model is accurate and points at the object at its last layer
    assert np.mean([r["correct"] for r in rows]) >= 0.9
    assert np.mean([r["block5_conv3/pointing"] for r in rows]) >= 0.8
    html = (out / "report.html").read_text()
    assert html.count("<tr>") == 21 and "summary/mean_maps.png" in html
    # the same command again: nothing to do
    code, _, err = run_cli(capsys, *args)
    assert code == 0 and "0 done (0 errors), 20 skipped" in err
    # another method on the same folder: refused in one line, unless --overwrite
    code, _, err = run_cli(capsys, *args, "--method", "layercam")
    assert code != 0 and "holds a different run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    code, _, _ = run_cli(capsys, "batch-merge", str(out))
    assert code == 0


def test_batch_folder_gif_html_and_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        Image.fromarray(make_sample(5, i, 96)[0]).save(src / f"{i}.png")
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "batch", str(src), "-o", str(out), "--save", "gif,html", "--layers", "block5_*", "--progress", "none"
    )
    assert code == 0, err
    rows = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows["bad.png"]["status"].startswith("error: ") and "bad.png" in rows["bad.png"]["status"]
    for i in range(3):
        r = rows[f"{i}.png"]
        assert r["outputs"] == [f"items/{i}.png.gif", f"items/{i}.png.html"]
        with Image.open(out / r["outputs"][0]) as im:
            assert im.n_frames == 3  # block5_conv1..3
        assert "<html" in (out / r["outputs"][1]).read_text().lower()


def test_batch_bad_arguments_fail_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "batch", "--shapes", "3", "-o", str(tmp_path / "r"), "--save", "mp5")
    assert code != 0 and "--save" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "batch", "-o", str(tmp_path / "r"))
    assert code != 0 and "exactly one source" in err
    code, _, err = run_cli(capsys, "batch", "--shapes", "3", "-o", str(tmp_path / "r"), "--shard", "2/2")
    assert code != 0 and "shard" in err
    assert not (tmp_path / "r").exists()


def test_batch_cli_builds_one_run_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--batch-size is images per pass; perturbed copies are --perturb-batch; --no-retry-errors."""
    import layerscope.batch
    from layerscope.batch import RunResult

    seen = {}

    def fake(config, spec, model):
        seen.update(config=config, spec=spec)
        return RunResult(run_dir=Path(config.out_dir))

    monkeypatch.setattr(layerscope.batch, "run_config", fake)
    args = ["batch", "--shapes", "3", "-o", str(tmp_path / "r"), "--method", "scorecam", "--batch-size", "5"]
    code, _, err = run_cli(capsys, *args, "--perturb-batch", "7", "--no-retry-errors", "--save", "npz,gif")
    assert code == 0, err
    config, spec = seen["config"], seen["spec"]
    assert (config.batch_size, config.method_options.get("perturb_batch"), config.retry_errors) == (5, 7, False)
    assert (spec.shapes, config.save, config.engine) == (3, "npz,gif", "local")
