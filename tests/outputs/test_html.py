"""outputs.html: the self-contained explorer — its data (maps at their own resolution,
8-bit on their own range), its size, and its behaviour in a real Chromium (Playwright):
opened from disk, slider, keys, play, method/class/scale switches, show original, hover
values, pixels checked against the Python renderer, no console errors."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layerscope import outputs, render
from layerscope.errors import UsageError
from layerscope.explanation import Explanation
from layerscope.info import ModelInfo
from layerscope.outputs import html as html_mod
from layerscope.render import RenderOptions
from layerscope.resize import resize_bilinear

CHROMIUM = "/usr/bin/chromium"
LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1"]
SIZES = [(28, 36), (14, 18), (7, 9), (4, 5)]
GAIN = [0.01, 0.3, 1.0, 0.5]  # layer 0 is weak: a shared scale shows it dim


def make(method: str = "gradcam", target: int = 0, note: str | None = None) -> Explanation:
    rng = np.random.default_rng(abs(hash((method, target))) % 2**32)
    img = np.zeros((56, 72, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, 72)[None, :].astype(np.uint8)
    img[..., 1] = 90
    img[10:30, 20:50] = (240, 240, 40)
    cams = {}
    for name, (h, w), g in zip(LAYERS, SIZES, GAIN, strict=True):
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        cy, cx = rng.uniform(0.2, 0.8, 2)
        cams[name] = (g * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * 8))[None].astype(np.float32)
    return Explanation(
        layers=list(LAYERS),
        cams=cams,
        shapes={k: (64, h, w) for k, (h, w) in zip(LAYERS, SIZES, strict=True)},
        targets=np.array([target]),
        scores=np.array([1.0], np.float32),
        probabilities=np.array([0.8 if target == 0 else 0.15], np.float32),
        flat={k: np.zeros(1, bool) for k in LAYERS},
        images=[img],
        method=method,
        class_names=["tabby", "arrow </script> <b>x</b>"],
        info=ModelInfo(note=note),
    )


def bundle() -> list[Explanation]:
    return [make(m, t, note="RANDOM WEIGHTS") for m in ("gradcam", "layercam") for t in (0, 1)]


def data_of(page_html: str) -> dict:
    m = re.search(r'<script type="application/json" class="ls-data">(.*?)</script>', page_html, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_data_keeps_maps_at_their_resolution_and_exact_to_1_255(tmp_path: Path) -> None:
    exps = bundle()
    d = html_mod.explorer_data(exps)
    assert [m["key"] for m in d["methods"]] == ["gradcam", "layercam"]
    assert [c["label"] for c in d["classes"]] == ["tabby", "arrow </script> <b>x</b>"]
    assert sorted(d["views"]) == ["gradcam|0", "gradcam|1", "layercam|0", "layercam|1"]
    v = d["views"]["layercam|1"]
    for L, (h, w), name in zip(v["layers"], SIZES, LAYERS, strict=True):
        q = np.frombuffer(base64.b64decode(L["data"]), np.uint8).reshape(h, w)
        cam = exps[3].cams[name][0]
        back = L["lo"] + q / 255.0 * (L["hi"] - L["lo"])
        assert np.abs(back - cam).max() <= (L["hi"] - L["lo"]) / 510 + 1e-9
    assert v["shared"] == [min(L["lo"] for L in v["layers"]), max(L["hi"] for L in v["layers"])]
    assert len(v["series"]) == 2 and all(len(s["values"]) == 4 for s in v["series"])
    assert v["series"][0]["values"][-1] == 0.0  # the last layer's peak is at distance 0 from itself
    with pytest.raises(UsageError, match="same image"):
        other = make("gradcam", 1)
        other.images[0] = other.images[0][::-1].copy()
        html_mod.explorer_data([exps[0], other])
    with pytest.raises(UsageError, match="two explanations"):
        html_mod.explorer_data([exps[0], exps[0]])
    with pytest.raises(UsageError, match="3 values for 4 layers"):
        html_mod.explorer_data(exps[:1], series={"x": [1, 2, 3]})


def test_page_is_self_contained_and_escapes_text(tmp_path: Path) -> None:
    p = outputs.write_html(bundle(), tmp_path / "e.html")
    text = p.read_text()
    assert text.startswith("<!doctype html>") and text.count('class="ls-explorer"') == 1
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<link" not in text and "import " not in text
    assert "arrow </script>" not in text and "<b>x</b>" not in text  # names escaped in HTML and JSON
    assert data_of(text)["classes"][1]["label"] == "arrow </script> <b>x</b>"
    one = make()
    assert one.save(tmp_path / "one.html") == tmp_path / "one.html"
    frag = outputs.explorer_fragment(one, assets=False)
    assert frag.lstrip().startswith('<div class="ls-explorer"') and "<script>" not in frag
    css, js = outputs.explorer_assets()
    assert "ls-explorer" in css and "LayerscopeExplorer" in js


def vgg_like() -> Explanation:
    sizes = [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
    names = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    rng = np.random.default_rng(0)
    cams = {}
    for name, s in zip(names, sizes, strict=True):
        smooth = resize_bilinear(rng.random((1, max(2, s // 8), max(2, s // 8))), (s, s))  # maps are smooth
        cams[name] = np.maximum(smooth - 0.3, 0).astype(np.float32)
    yy, xx = np.mgrid[0:224, 0:224]
    photo = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)
    return Explanation(
        layers=names, cams=cams, shapes={k: (1, 64, s, s) for k, s in zip(names, sizes, strict=True)},
        targets=np.array([0]), scores=np.ones(1, np.float32), probabilities=np.ones(1, np.float32),
        flat={k: np.zeros(1, bool) for k in names}, images=[photo], class_names=["cat"],
    )  # fmt: skip


def test_size_for_vgg16s_13_layers(tmp_path: Path) -> None:
    p = vgg_like().save(tmp_path / "vgg.html")
    size = p.stat().st_size
    # 137,788 map values (1 byte each, base64) + the photo + ~20 kB of script and style
    assert 137_788 * 4 / 3 < size < 400_000, size


# --- in a real browser ----------------------------------------------------------------------------

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (Playwright's own download is not used)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    pg = browser.new_page(viewport={"width": 900, "height": 900}, device_scale_factor=1)
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    pg.close()


def canvas(pg) -> np.ndarray:  # type: ignore[no-untyped-def]
    shot = pg.locator("canvas.ls-view").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)


def expected(d: dict, view: str, layer: int, scale: str = "layer", alpha: float = 0.5) -> np.ndarray:
    """What the renderer draws for this view and layer, from the page's own data."""
    src = d["image"]["src"].split(",", 1)[1]
    base = np.asarray(Image.open(io.BytesIO(base64.b64decode(src))).convert("RGB"))
    v = d["views"][view]
    L = v["layers"][layer]
    q = np.frombuffer(base64.b64decode(L["data"]), np.uint8).reshape(L["h"], L["w"]).astype(np.float64)
    values = L["lo"] + q / 255 * (L["hi"] - L["lo"])
    lo, hi = (L["lo"], L["hi"]) if scale == "layer" else v["shared"]
    return render.overlay(base, np.clip((values - lo) / (hi - lo), 0, 1), d["colormap"]["name"], alpha).astype(int)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a - b)
    return diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_explorer_in_chromium(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = outputs.write_html(bundle(), tmp_path / "explorer.html", RenderOptions(duration=100))
    d = data_of(p.read_text())
    page.goto(p.resolve().as_uri())
    page.wait_for_selector(".ls-explorer[data-ready]")
    cap = page.locator(".ls-caption")
    assert "1/4" in cap.inner_text() and "block1_conv1" in cap.inner_text() and "output 64x28x36" in cap.inner_text()
    assert "RANDOM WEIGHTS" in page.inner_text(".ls-note")
    first = canvas(page)
    assert first.shape[:2] == (d["image"]["height"], d["image"]["width"])
    assert close(first, expected(d, "gradcam|0", 0))

    page.keyboard.press("ArrowRight")  # keys
    assert "2/4" in cap.inner_text() and "block2_conv1" in cap.inner_text()
    second = canvas(page)
    assert not close(second, first) and close(second, expected(d, "gradcam|0", 1))
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # wraps to the last layer
    assert "4/4" in cap.inner_text()

    page.locator(".ls-slider").evaluate("(s) => { s.value = '2'; s.dispatchEvent(new Event('input')); }")
    assert "3/4" in cap.inner_text() and close(canvas(page), expected(d, "gradcam|0", 2))

    page.select_option(".ls-method", "layercam")  # method switch
    assert "Layer-CAM" in cap.inner_text() and close(canvas(page), expected(d, "layercam|0", 2))
    page.select_option(".ls-class-select", "1")  # class switch
    assert "Class: arrow </script> <b>x</b> (p = 0.15)" in cap.inner_text()
    assert close(canvas(page), expected(d, "layercam|1", 2))

    page.locator(".ls-slider").evaluate("(s) => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
    per_layer = canvas(page)
    page.check(".ls-shared")  # the weak first layer goes dim on a shared scale
    shared = canvas(page)
    assert close(shared, expected(d, "layercam|1", 0, "shared")) and not close(shared, per_layer)
    assert "shared scale" in page.inner_text(".ls-legend")
    page.uncheck(".ls-shared")

    page.locator(".ls-alpha").evaluate("(s) => { s.value = '1'; s.dispatchEvent(new Event('input')); }")
    assert close(canvas(page), expected(d, "layercam|1", 0, alpha=1.0))
    page.check(".ls-show-original")
    src = d["image"]["src"].split(",", 1)[1]
    original = np.asarray(Image.open(io.BytesIO(base64.b64decode(src))).convert("RGB")).astype(int)
    assert np.abs(canvas(page) - original).max() <= 2
    page.uncheck(".ls-show-original")

    # hover: the map's value under the pointer, as the renderer interpolates it
    box = page.locator("canvas.ls-view").bounding_box()
    x, y = 30, 20
    page.mouse.move(box["x"] + x + 0.5, box["y"] + y + 0.5)
    readout = page.inner_text(".ls-readout")
    shown = float(re.search(r"value at \(30, 20\): ([-0-9.e+]+)", readout).group(1))
    L = d["views"]["layercam|1"]["layers"][0]
    q = np.frombuffer(base64.b64decode(L["data"]), np.uint8).reshape(L["h"], L["w"]).astype(np.float64)
    up = resize_bilinear(q[None], (d["image"]["height"], d["image"]["width"]))[0]
    assert shown == pytest.approx(L["lo"] + up[y, x] / 255 * (L["hi"] - L["lo"]), rel=2e-2)

    page.click(".ls-play")  # play at 100 ms per layer
    page.wait_for_function("document.querySelector('.ls-counter').textContent === '3/4'", timeout=5000)
    page.click(".ls-play")  # pause: the layer stays
    held = page.inner_text(".ls-counter")
    page.wait_for_timeout(350)
    assert page.inner_text(".ls-counter") == held and "play" in page.inner_text(".ls-play")
    page.locator(".ls-slider").evaluate("(s) => { s.value = '3'; s.dispatchEvent(new Event('input')); }")
    page.locator("svg.ls-chart .ls-hit").click(position={"x": 2, "y": 10})  # the chart jumps to a layer
    assert "1/4" in cap.inner_text()
    assert page.locator("svg.ls-chart polyline").count() == 2
    assert page.errors == []  # type: ignore[attr-defined]


def test_real_model_page_screenshot(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The demo model on its sample image: two methods, two classes. The README's picture:
    ``LAYERSCOPE_EXPLORER_SCREENSHOT=docs/explorer.png pytest tests/test_outputs_html.py``."""
    import layerscope

    try:
        model = layerscope.load_model("demo")
        from layerscope.cli import _common

        image = _common.sample_image("demo")
    except Exception as e:  # the zoo is not importable here
        pytest.skip(f"demo model unavailable: {e}")
    exps = [layerscope.explain(model, image, method=m) for m in ("gradcam", "layercam")]
    exps.append(layerscope.explain(model, image, method="gradcam", target=(int(exps[0].targets[0]) + 1) % 10))
    p = outputs.write_html(exps, tmp_path / "demo.html")
    page.goto(p.resolve().as_uri())
    page.wait_for_selector(".ls-explorer[data-ready]")
    page.keyboard.press("ArrowLeft")
    assert "13/13" in page.inner_text(".ls-caption")
    page.mouse.move(10, 10)
    assert page.errors == []  # type: ignore[attr-defined]
    shot = tmp_path / "explorer.png"
    page.locator(".ls-explorer").screenshot(path=str(shot))
    target = os.environ.get("LAYERSCOPE_EXPLORER_SCREENSHOT")
    if target:
        shutil.copy(shot, target)


def test_an_index_page_embeds_several_explorers(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What a dataset page does: fragments without assets, the style and script once."""
    css, js = outputs.explorer_assets()
    frags = [outputs.explorer_fragment(make(m), assets=False) for m in ("gradcam", "layercam")]
    p = tmp_path / "index.html"
    p.write_text(f"<!doctype html><meta charset=utf-8><style>{css}</style>{''.join(frags)}<script>{js}</script>")
    page.goto(p.resolve().as_uri())
    page.wait_for_function("document.querySelectorAll('.ls-explorer[data-ready]').length === 2")
    counters = page.locator(".ls-counter")
    page.locator(".ls-explorer").nth(1).click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowRight")
    assert counters.nth(0).inner_text() == "1/4" and counters.nth(1).inner_text() == "2/4"
    assert "Layer-CAM" in page.locator(".ls-caption").nth(1).inner_text()
    assert page.errors == []  # type: ignore[attr-defined]


def test_chart_series_have_distinct_colours_and_a_legend_that_wraps() -> None:
    # nine series (the evaluate page's metrics): each its own colour, each label shown
    series = {f"metric {k}": [k, 1.0, 2.0, 3.0] for k in range(9)}
    d = html_mod.explorer_data(bundle()[:1], series=series)
    colours = [s["colour"] for s in d["views"]["gradcam|0"]["series"]]
    assert len(colours) == 9 and len(set(colours)) == 9
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    many = html_mod.series_colours(40)
    assert len(set(many)) == 40 and many[:10] == list(html_mod.SERIES_COLOURS)
    css, js = outputs.explorer_assets()
    # a rule for every chart text used to override each label's own colour with grey
    assert not re.search(r"svg\.ls-chart text\s*\{[^}]*fill", css)
    assert re.search(r"\.ls-series\{[^}]*flex-wrap:wrap", css)
    # labels go into the wrapping HTML legend in the series' colour, not 200 px apart in the SVG
    assert "k * 200" not in js and "s.colour" in js and ".ls-series" in js
    frag = outputs.explorer_fragment(bundle()[:1], assets=False)
    assert '<div class="ls-series"' in frag


def test_a_notebook_fragment_carries_a_still_for_viewers_without_scripts() -> None:
    exp = make()
    frag = exp._repr_html_()
    m = re.search(r'<img class="ls-static" src="data:image/(png|jpeg);base64,([^"]+)"', frag)
    assert m is not None
    still = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
    assert max(still.size) <= html_mod.STATIC_MAX_SIDE
    last = exp.frames(0)[-1]  # the still is the last layer's frame
    assert abs(still.width / still.height - last.width / last.height) < 0.02
    px = np.asarray(still.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(px, axis=0)) > 20  # a drawn, coloured frame, not a black square
    assert re.search(r'<div class="ls-stage" hidden>', frag)  # the empty canvas is hidden without scripts
    css, js = outputs.explorer_assets()
    assert "[hidden]{display:none!important}" in css
    assert 'q("img.ls-static")' in js and 'removeAttribute("hidden")' in js  # the script swaps them
    page = outputs.explorer_page(exp)  # a page always runs its script: no still
    assert '<img class="ls-static"' not in page
