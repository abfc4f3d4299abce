"""The fused map (``Explanation.fused``) as one more, last frame in every output: GIF, APNG,
WebP and MP4 have L + 1 frames, the ``.npz`` holds ``fused``, the HTML explorer a last view
"fused" on its own scale (checked in Chromium when it is there)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import outputs
from layerscope.explanation import Explanation
from layerscope.outputs import html as html_mod
from layerscope.render import RenderOptions

LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1"]
SIZES = [(28, 36), (14, 18), (7, 9), (4, 5)]
GAIN = [0.01, 0.3, 1.0, 0.5]


def make(fuse: str | None = "layercam-fusion") -> Explanation:
    """Four Gaussian-blob layers of different sizes and strengths over a 56×72 picture."""
    img = np.zeros((56, 72, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, 72)[None, :].astype(np.uint8)
    img[..., 1] = 90
    img[10:30, 20:50] = (240, 240, 40)
    cams = {}
    for k, (name, (h, w), g) in enumerate(zip(LAYERS, SIZES, GAIN, strict=True)):
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        cams[name] = (g * np.exp(-((yy - 0.3 - 0.1 * k) ** 2 + (xx - 0.5) ** 2) * 8))[None].astype(np.float32)
    exp = Explanation(
        layers=list(LAYERS),
        cams=cams,
        shapes={k: (64, h, w) for k, (h, w) in zip(LAYERS, SIZES, strict=True)},
        targets=np.array([0]),
        scores=np.array([1.0], np.float32),
        probabilities=np.array([0.8], np.float32),
        flat={k: np.zeros(1, bool) for k in LAYERS},
        images=[img],
        method="layercam",
        class_names=["tabby", "arrow"],
    )
    if fuse:
        exp.fused(fuse)
    return exp


def test_frames_and_captions_end_with_the_fused_map() -> None:
    exp = make()
    assert exp.n_frames == 5 and exp.fusion.map.shape == (1, 28, 36)
    texts = exp.frame_texts()
    assert [t.counter for t in texts] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert texts[-1].lines == ("Fused: LayerCAM fusion of 4 layers", "Class: tabby (p = 0.80) · Layer-CAM")
    assert exp.fused_caption(0, "recipe") == ["Fused: LayerCAM fusion of 4 layers"]
    frames = exp.frames()
    assert len(frames) == 5 and len({f.size for f in frames}) == 1
    # the fused frame is its own picture, not a copy of the last layer's
    assert not np.array_equal(np.asarray(frames[-1]), np.asarray(frames[-2]))


def test_show_draws_the_fused_frame() -> None:
    import matplotlib

    matplotlib.use("Agg")
    ax = make().show("fused")
    assert ax.images[0].get_array().shape[:2] == np.asarray(make().frames()[-1]).shape[:2]


def test_the_fused_map_keeps_its_own_range_on_a_shared_scale() -> None:
    exp = make()
    maps, ranges = exp._frame_maps(0, "shared")
    assert len(maps) == 5 and ranges[0] == ranges[3]  # the layers share one
    assert ranges[0][1] == pytest.approx(max(float(exp.cams[k].max()) for k in LAYERS))
    assert ranges[4] == (float(exp.fusion.map.min()), float(exp.fusion.map.max()))


@pytest.mark.parametrize("ext", [".gif", ".png", ".webp"])
def test_animations_have_one_frame_more(tmp_path: Path, ext: str) -> None:
    plain, fused = make(None), make()
    a = plain.save(tmp_path / f"plain{ext}")
    b = fused.save(tmp_path / f"fused{ext}")
    with Image.open(a) as im_a, Image.open(b) as im_b:
        assert (im_a.n_frames, im_b.n_frames) == (4, 5)
        im_b.seek(4)
        last = np.asarray(im_b.convert("RGB"))
    first_4 = [np.asarray(f) for f in fused.frames()]
    assert np.abs(last.astype(int) - first_4[-1].astype(int)).mean() < 3  # the fused frame, as drawn


def test_mp4_has_one_frame_more(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    p = make().save(tmp_path / "fused.mp4")
    with av.open(str(p)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_npz_holds_the_fused_map_and_the_manifest_says_how(tmp_path: Path) -> None:
    exp = make()
    p = exp.save(tmp_path / "maps.npz")
    with np.load(p, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["fused"], exp.fusion.map)
        assert z["fused"].dtype == np.float32 and not z["fused_flat"].any()
    assert outputs.read_manifest(p)["fusion"] == {
        "method": "layercam-fusion",
        "layers": LAYERS,
        "options": {},
        "map_shape": [28, 36],
    }
    p2 = make(None).save(tmp_path / "plain.npz")
    with np.load(p2) as z:
        assert "fused" not in z
    assert outputs.read_manifest(p2)["fusion"] is None


def data_of(page_html: str) -> dict:
    m = re.search(r'<script type="application/json" class="ls-data">(.*?)</script>', page_html, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_explorer_data_has_a_last_fused_view() -> None:
    d = html_mod.explorer_data([make()])
    (view,) = d["views"].values()
    names = [L["name"] for L in view["layers"]]
    assert names == [*LAYERS, "fused"]
    fused = view["layers"][-1]
    assert fused["fused"] == "Fused: LayerCAM fusion of 4 layers" and (fused["h"], fused["w"]) == (28, 36)
    assert view["shared"][1] == pytest.approx(max(L["hi"] for L in view["layers"][:4]))  # layers only
    assert all(len(s["values"]) == 5 for s in view["series"])
    # a caller's per-layer series leaves a gap at the fused view
    d = html_mod.explorer_data([make()], series={"drop": [1.0, 2.0, 3.0, 4.0]})
    (s,) = next(iter(d["views"].values()))["series"]
    assert s["raw"] == [1.0, 2.0, 3.0, 4.0, None] and s["values"][-1] == 0.0


def test_explorer_in_chromium_shows_the_fused_view_last(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip(f"{chromium} is missing")
    p = outputs.write_html([make()], tmp_path / "explorer.html", RenderOptions())
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(p.resolve().as_uri())
            page.wait_for_selector(".ls-explorer[data-ready]")
            page.keyboard.press("ArrowLeft")  # wraps to the last frame: the fused one
            cap = page.inner_text(".ls-caption")
            assert "5/5" in cap and "Fused: LayerCAM fusion of 4 layers" in cap and "map 28×36" in cap
            own = page.locator("canvas.ls-view").screenshot()
            page.check(".ls-shared")  # the fused map stays on its own range
            assert "the fused map on its own" in page.inner_text(".ls-legend")
            assert page.locator("canvas.ls-view").screenshot() == own
            assert errors == []
        finally:
            browser.close()
    still = data_of(p.read_text())
    assert len(next(iter(still["views"].values()))["layers"]) == 5
    Image.open(io.BytesIO(own)).verify()
