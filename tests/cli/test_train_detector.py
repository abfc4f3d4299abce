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


def test_the_parsers_defaults_are_train_s_own_and_building_it_imports_no_torch() -> None:
    import inspect
    import subprocess
    import sys

    from layerscope.cli.train_detector import DEFAULTS
    from layerscope.training.demo_detector import train

    params = inspect.signature(train).parameters
    assert {k: params[k].default for k in DEFAULTS} == DEFAULTS
    code = "import sys; from layerscope import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # a tour of a huge image decodes it before torch takes its memory
