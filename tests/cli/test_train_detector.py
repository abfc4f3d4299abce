"""``layerscope train-detector``: trains, saves weights that load as demo-detector, refuses
to overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import run_cli

import layerscope
from layerscope.models.demo_detector import preprocess


def test_train_detector_writes_loadable_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "det.safetensors"
    args = ("train-detector", "--steps", "2", "--batch-size", "2", "--pool", "4", "--eval", "4", "--no-progress")
    code, stdout, err = run_cli(capsys, *args, "-o", str(out))
    assert code == 0, err
    assert "trained for 2 steps" in stdout and "mAP@0.5 on 4 fresh scenes" in stdout
    model = layerscope.load_model("demo-detector", weights=str(out))
    assert isinstance(model(preprocess(np.zeros((1, 128, 128, 3), np.uint8))), list)
    code, _, err = run_cli(capsys, *args, "-o", str(out))
    assert code != 0 and "exists" in err
