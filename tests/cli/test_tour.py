"""``layerscope tour --rank-layers``: the layers printed best first with their scores, the
best one starred in its frame's caption and on the explorer page; what it cannot do refused
in one line before any model is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("scipy")

from conftest import run_cli


def _ranking(stdout: str) -> list[tuple[str, float]]:
    return [(m[1], float(m[2])) for m in re.finditer(r"^\s+\d+\. (\S+)\s+(-?[\d.]+)", stdout, re.M)]


def test_rank_layers_prints_the_ranking_and_stars_the_best_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import layerscope.explanation.result as result

    captions: list[list[str]] = []
    caption = result.Explanation.caption

    def spy(self, layer, index=0, style="layerscope"):  # what each frame is captioned
        captions.append(caption(self, layer, index, style))
        return captions[-1]

    monkeypatch.setattr(result.Explanation, "caption", spy)
    out = tmp_path / "t.gif"
    code, stdout, err = run_cli(capsys, "tour", "--layers", "block5_*", "--rank-layers", "-o", str(out))
    assert code == 0, err
    assert "rank layers: 19 forward passes to score 3 layers × 1 image by ROAD combined" in err  # announced
    assert "layers ranked by ROAD combined (higher is better):" in stdout
    ranked = _ranking(stdout)
    assert sorted(name for name, _ in ranked) == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)
    best = ranked[0][0]
    assert re.search(rf"1\. {best}\s+\S+\s+★", stdout)
    starred = [c[0] for c in captions if "★" in c[0]]
    assert starred and all(c.startswith(f"Layer: {best} ") and "★ best by ROAD combined" in c for c in starred)
    with Image.open(out) as im:
        assert im.n_frames == 3


def test_rank_layers_on_the_explorer_page_by_deletion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.html"
    code, stdout, err = run_cli(
        capsys, "tour", "--layers", "block4_conv3,block5_conv3", "--rank-layers", "--rank-metric", "deletion",
        "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "layers ranked by Deletion AUC (lower is better):" in stdout
    best = _ranking(stdout)[0][0]
    page = out.read_text()
    data = json.loads(re.search(r'<script type="application/json" class="ls-data">(.*?)</script>', page, re.S)[1])
    (view,) = data["views"].values()
    assert [L["name"] for L in view["layers"] if L["best"]] == [best] and view["best_by"] == "Deletion AUC"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--framework", "keras"], "PyTorch models only"),
        (["--methods", "gradcam,layercam", "-o", "x.html"], "ranks the layers of one explanation"),
        (["--top-k-classes", "2", "-o", "x.html"], "ranks the layers of one explanation"),
        (["--rank-metric", "pointing"], "invalid choice"),
    ],
)
def test_what_rank_layers_cannot_do_is_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "tour", "--rank-layers", *args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if "error" in ln]) == 1


def test_rank_metric_needs_rank_layers(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "tour", "--rank-metric", "deletion")
    assert code == 2 and "--rank-metric applies to --rank-layers only" in err


def test_the_caption_font_draws_the_star() -> None:
    from layerscope.render.text import font

    f = font(20)
    box = f.getmask("★").getbbox()
    assert box is not None and not np.array_equal(np.asarray(f.getmask("★")), np.asarray(f.getmask("\ufffe")))
