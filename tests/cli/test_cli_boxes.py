"""``layerscope tour --target box:x0,y0,x1,y1[:label]`` and ``--target top-detections:K``:
a detector explained from the command line; malformed specs fail before the model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import cli
from layerscope.cli import _common


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tour(*extra: str) -> int:
    return cli.main(["tour", "in.png", "--model", "helpers_detector:TinyDetector", "--size", "32", *extra])


def test_tour_box_target(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _tour("--target", "box:14,16,22,24", "-o", "a.gif") == 0
    out = capsys.readouterr().out
    assert re.search(r"box \(1[34],1[56],2[23],2[345]\) label \d \(p = 0\.\d+, score 1\.\d+\)", out), out
    gif = Image.open(setup / "a.gif")
    assert gif.n_frames == 2


def test_tour_top_detections_page(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _tour("--target", "top-detections:3", "-o", "a.html") == 0
    out = capsys.readouterr().out
    assert "3 detections" in out
    page = (setup / "a.html").read_text()
    assert "detection <select" in page
    data = json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1))
    assert len(data["classes"]) == 3
    for view in data["views"].values():
        assert sum(b["thick"] for b in view["boxes"]) == 1 and len(view["boxes"]) == 7


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("box:1,2,3", "four numbers"),
        ("box:1,2,x,4", "four numbers"),
        ("box:1,2,3,inf", "four numbers"),
        ("box:5,5,1,1", "x1 > x0"),
        ("box:1,2,3,4:cat", "class index"),
        ("top-detections:0", "how many"),
        ("top-detections:two", "how many"),
    ],
)
def test_malformed_specs_fail_before_loading(
    setup: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], spec: str, words: str
) -> None:
    def never(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(_common, "load_model_from_args", never)
    assert _tour("--target", spec, "-o", "a.gif") == 2
    assert words in capsys.readouterr().err


def test_specs_that_need_another_command_or_output(
    setup: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_common, "load_model_from_args", lambda *a, **k: pytest.fail("loaded"))
    assert _tour("--target", "top-detections:3", "-o", "a.gif") == 2
    assert "html" in capsys.readouterr().err
    assert _tour("--target", "box:1,2,8,9", "--method", "scorecam", "-o", "a.gif") == 2
    assert "Grad-CAM family" in capsys.readouterr().err
    rc = cli.main(["grid", "in.png", "--model", "helpers_detector:TinyDetector", "--target", "box:1,2,8,9"])
    assert rc == 2
    assert "layerscope tour" in capsys.readouterr().err
