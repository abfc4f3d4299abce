"""The interactive explorer: one self-contained ``.html`` file (no server, no network: the
image and the maps embedded, the script inline) that works opened from disk.

It shows the original image with the map of one layer over it: a layer slider and ←/→ keys,
play/pause at the frame duration, a method switch and a class switch (or prompt, reference,
detection switch) when several explanations are given (:func:`write_html` takes a list), a
detector's boxes drawn over the map, an opacity slider, per-layer or
shared scale, a colour bar legend with the scale's range, a "show original" toggle, the
map's value under the pointer, and a small SVG chart per layer (where the map's peak is
relative to the last layer's, and how much of the image it covers; or the caller's own
per-layer series, e.g. metrics). A ranking's best layer
(:attr:`~layerscope.explanation.Explanation.best_layers`) is starred ★ in the caption and
above its column of the chart.

Size: each map is stored at its layer's own resolution as 8-bit values on the layer's own
range (hover values are exact to 1/255 of it) and enlarged in the browser with the same
bilinear convention as the renderer; the photo once, at display size (at most 1024 px on
its longer side, at least 320 on its shorter), as PNG or JPEG whichever is smaller.
VGG16's 13 layers at 224×224: 137,788 map values, about 184 kB of base64 per method and
class.

:func:`explorer_fragment` gives one explorer as an HTML fragment (what a notebook shows, and
what a page listing many images embeds; :func:`explorer_assets` gives the style and the
script once for such a page).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from layerscope.atomic import atomic_file
from layerscope.errors import UsageError, plural
from layerscope.outputs._registry import register
from layerscope.outputs.base import Writer
from layerscope.render.colors import colormap_lut
from layerscope.render.drawing import base_image, display_size
from layerscope.render.options import RenderOptions
from layerscope.render.scale import is_flat, map_range
from layerscope.resize import resize_bilinear

#: The explorer shows the photo at most this large (the maps keep their own resolution) …
EXPLORER_MAX_SIDE = 1024
#: … and at least this large on its shorter side (small inputs are enlarged).
EXPLORER_MIN_SIDE = 320
#: The per-layer chart's default series are computed on a grid of this size.
CHART_GRID = 64


@lru_cache(maxsize=8)
def _asset(name: str) -> str:
    return resources.files("layerscope.outputs").joinpath("templates", name).read_text(encoding="utf-8")


@lru_cache(maxsize=4)
def _template(name: str) -> Any:
    import jinja2

    env = jinja2.Environment(autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_asset(name))


def explorer_assets() -> tuple[str, str]:
    """The explorer's ``(css, javascript)``, to include once in a page that embeds several
    fragments made with ``assets=False``. The script initialises every ``.ls-explorer``
    element on the page (run it after them, or call ``LayerscopeExplorer.initAll()``). Keys
    work in a focused explorer; set ``LayerscopeExplorer.globalKeys = true`` for ←/→ anywhere
    on the page to drive the explorer last used (the standalone page does)."""
    return _asset("explorer.css"), _asset("explorer.js")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _image_src(rgb: np.ndarray) -> str:
    """A data URI of the photo: PNG, or JPEG (quality 92) when that is under 2/3 the size."""
    im = Image.fromarray(rgb)
    png, jpg = io.BytesIO(), io.BytesIO()
    im.save(png, format="PNG", optimize=True)
    im.save(jpg, format="JPEG", quality=92)
    if len(jpg.getvalue()) * 1.5 < len(png.getvalue()):
        return "data:image/jpeg;base64," + _b64(jpg.getvalue())
    return "data:image/png;base64," + _b64(png.getvalue())


def _quantise(cam: np.ndarray) -> tuple[np.ndarray, float, float, bool]:
    """uint8 values of ``cam`` on its own finite range, the range, and whether it is flat."""
    lo, hi = map_range(cam)
    a = np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=lo, posinf=hi, neginf=lo)
    if is_flat(lo, hi):
        return np.zeros(a.shape, np.uint8), lo, lo, True
    q = np.clip(np.round((a - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    return q, lo, hi, False


def default_series(maps: Sequence[np.ndarray], n_layers: int | None = None) -> list[dict[str, Any]]:
    """The chart's two series, each in [0, 1] per layer: the distance of the map's peak from
    the last layer's peak (as a fraction of the image diagonal), and the fraction of the
    image where the map is at least half its maximum. A flat map has no peak: both 0.
    ``n_layers``: the first maps that are layers (the others, a fused map, are measured
    against the last layer's peak too); default: all."""
    peaks, area = [], []
    for m in maps:
        lo, hi = map_range(m)
        if is_flat(lo, hi):
            peaks.append(None)
            area.append(0.0)
            continue
        up = resize_bilinear(np.nan_to_num(np.asarray(m, np.float64))[None], (CHART_GRID, CHART_GRID))[0]
        y, x = np.unravel_index(int(np.argmax(up)), up.shape)
        peaks.append(((y + 0.5) / CHART_GRID, (x + 0.5) / CHART_GRID))
        area.append(float(np.mean(up - lo >= 0.5 * (up.max() - lo))))
    last = next((p for p in reversed(peaks[:n_layers]) if p is not None), None)
    shift = [
        0.0 if p is None or last is None else float(np.hypot(p[0] - last[0], p[1] - last[1]) / np.sqrt(2.0))
        for p in peaks
    ]
    return [
        {"name": "peak shift from last layer", "values": shift},
        {"name": "area at ≥ ½ max", "values": area},
    ]


def _series_of(series: Mapping[str, Any] | None, method: str) -> Mapping[str, Sequence[float]] | None:
    """The chart series for one method: ``series`` is ``{name: values}`` for every view, or
    ``{method: {name: values}}`` per method (e.g. each method's metrics per layer)."""
    if not series:
        return None
    if all(isinstance(v, Mapping) for v in series.values()):
        return series.get(method) or None
    return series


def _user_series(series: Mapping[str, Sequence[float]], n: int) -> list[dict[str, Any]]:
    out = []
    for name, values in series.items():
        raw = [float(v) for v in values]
        if len(raw) != n:
            raise UsageError(f"chart series {name!r} has {plural(len(raw), 'value')} for {plural(n, 'layer')}")
        finite = [abs(v) for v in raw if np.isfinite(v)]
        top = max(finite) if finite and max(finite) > 0 else 1.0
        out.append(
            {
                "name": name,
                "values": [min(1.0, max(0.0, v / top)) if np.isfinite(v) else 0.0 for v in raw],
                "raw": [v if np.isfinite(v) else None for v in raw],  # JSON has no NaN: a gap is null
            }
        )
    return out


def _is_token_grid(dims: tuple[int, ...], grid: tuple[int, ...]) -> bool:
    """Whether a map is a transformer's tokens laid out as a grid (not the output's own h×w)."""
    return len(dims) < 3 or tuple(grid) not in (dims[-2:], dims[:2], dims[1:3])


#: The class switch's word for each kind of target (:mod:`layerscope.targets`).
SWITCH_WORDS = {"text": "prompt", "image": "reference", "box": "detection"}


def _boxes(exp: Any, index: int) -> list[dict[str, Any]]:
    """A detector's boxes of image ``index`` as fractions of the picture, for the explorer
    to draw (the explained one thick, with its label and score), as the frames draw them."""
    drawn = exp.drawn_boxes(index) if hasattr(exp, "drawn_boxes") else []
    h, w = exp.images[index].shape[:2]
    return [
        {"box": [d.box[0] / w, d.box[1] / h, d.box[2] / w, d.box[3] / h], "thick": d.thick, "text": d.text}
        for d in drawn
    ]


def _class_key(exp: Any, index: int) -> str:
    return str(int(exp.targets[index]))


def explorer_data(
    explanations: Sequence[Any],
    index: int = 0,
    options: RenderOptions | None = None,
    *,
    title: str | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The explorer's data (JSON-ready) for image ``index`` of each explanation."""
    from layerscope.methods import get_method

    exps = list(explanations)
    if not exps:
        raise UsageError("the explorer needs at least one explanation")
    opts = RenderOptions.of(options)
    first = exps[0]
    for e in exps:
        n = len(e.targets)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise UsageError(f"image index {index!r} is out of range for {plural(n, 'image')}")
        if e.images[index].shape != first.images[index].shape or not np.array_equal(
            e.images[index], first.images[index]
        ):
            raise UsageError("the explanations given to one explorer must be of the same image")
    image = first.images[index]
    size = display_size(image.shape[:2], EXPLORER_MIN_SIDE, max_side=min(opts.max_side, EXPLORER_MAX_SIDE))
    methods: dict[str, dict[str, Any]] = {}
    classes: dict[str, dict[str, Any]] = {}
    views: dict[str, Any] = {}
    for e in exps:
        m = get_method(e.method)
        title_m = m.title + (" (guided gradients)" if e.options.get("guided_grads") else "")
        agnostic = m.class_agnostic
        key_m = e.method + ("+guided" if e.options.get("guided_grads") else "")
        ck = _class_key(e, index)
        key = f"{key_m}|{ck}"
        if key in views:
            raise UsageError(f"two explanations for method {e.method!r} and class {e.class_name(index)!r}")
        methods.setdefault(key_m, {"key": key_m, "title": title_m})
        if not agnostic:
            classes.setdefault(ck, {"key": ck, "label": e.class_name(index)})
        maps = [np.asarray(e.cams[name][index]) for name in e.layers]
        best = getattr(e, "best_layers", None)  # a ranking's best layer per image, starred
        layers = []
        for name, cam in zip(e.layers, maps, strict=True):
            q, lo, hi, flat = _quantise(cam)
            layers.append(
                {
                    "name": name,
                    "shape": "x".join(str(int(s)) for s in e.shapes[name]),
                    "tokens": _is_token_grid(tuple(int(s) for s in e.shapes[name]), q.shape),
                    "h": int(q.shape[0]),
                    "w": int(q.shape[1]),
                    "lo": lo,
                    "hi": hi,
                    "flat": flat,
                    "best": best is not None and index < len(best) and best[index] == name,
                    "data": _b64(q.tobytes()),
                }
            )
        slo = min(L["lo"] for L in layers)
        shi = max(L["hi"] for L in layers)
        if is_flat(slo, shi):
            shi = slo
        n_layers = len(layers)
        if getattr(e, "fusion", None) is not None:  # one more view, last, on its own scale
            q, lo, hi, flat = _quantise(e.fusion.map[index])
            fused = {"name": "fused", "fused": e.fusion.caption, "shape": "", "tokens": False}
            layers.append(fused | {"h": int(q.shape[0]), "w": int(q.shape[1]), "lo": lo, "hi": hi, "flat": flat})
            layers[-1]["data"] = _b64(q.tobytes())
            maps.append(np.asarray(e.fusion.map[index]))
        own = _series_of(series, e.method)
        chart = _user_series(own, n_layers) if own else default_series(maps, n_layers)
        for s in chart if own else ():
            s["values"] += [0.0] * (len(layers) - n_layers)  # the fused view: a gap
            s["raw"] += [None] * (len(layers) - n_layers)
        views[key] = {
            "key": key,
            "method": key_m,
            "agnostic": agnostic,
            "title": title_m,
            "label": e.class_name(index),
            "p": float(e.probabilities[index]),
            "caption": e.target_caption(index),
            "note": getattr(e, "note", None),
            "best_by": str(getattr(e, "best_by", "") or ""),
            "shared": [slo, shi],
            "layers": layers,
            "series": chart,
            "boxes": _boxes(e, index),
        }
        for s, colour in zip(views[key]["series"], series_colours(len(views[key]["series"])), strict=True):
            s["colour"] = colour
    if not classes:  # only class-agnostic methods: one "class", the top-1
        ck = _class_key(first, index)
        classes[ck] = {"key": ck, "label": first.class_name(index)}
    return {
        "title": title or "",
        "image": {"src": _image_src(base_image(image, size)), "width": int(size[1]), "height": int(size[0])},
        "duration": int(opts.duration),
        "alpha": float(opts.alpha),
        "scale": opts.scale,
        "side_by_side": bool(opts.side_by_side),
        "colormap": {"name": opts.colormap, "lut": _b64(colormap_lut(opts.colormap).tobytes())},
        "methods": list(methods.values()),
        "classes": list(classes.values()),
        "switch": SWITCH_WORDS.get(getattr(first, "target_kind", "class"), "class"),
        "views": views,
    }


#: The still picture's longest side in pixels (see :func:`explorer_fragment`'s ``static``).
STATIC_MAX_SIDE = 480

#: The chart's series colours: ten that tell apart (Tableau 10), then evenly spread hues.
SERIES_COLOURS = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip


def series_colours(n: int) -> list[str]:
    """``n`` distinct colours for the chart's series (a palette, then golden-angle hues)."""
    import colorsys

    out = list(SERIES_COLOURS[:n])
    for k in range(len(out), n):
        r, g, b = colorsys.hls_to_rgb((k * 0.618034) % 1.0, 0.6, 0.65)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def _static_src(exp: Any, index: int, options: RenderOptions | None) -> str:
    """The last frame (the last layer's, or the fused map's), shrunk to :data:`STATIC_MAX_SIDE`, as a data URL."""
    from collections import deque

    (last,) = deque(exp.iter_frames(index, options), maxlen=1)  # drawn one at a time; only the last kept
    last.thumbnail((STATIC_MAX_SIDE, STATIC_MAX_SIDE))
    return _image_src(np.asarray(last.convert("RGB")))


def _json_for_script(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def explorer_fragment(
    explanations: Sequence[Any] | Any,
    index: int = 0,
    options: RenderOptions | None = None,
    *,
    title: str | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
    assets: bool = True,
    element_id: str | None = None,
    static: bool | None = None,
) -> str:
    """One explorer as an HTML fragment (a ``<div class="ls-explorer">``), for a notebook
    or a page that lists many images.

    Args:
        explanations: one :class:`~layerscope.Explanation` or several of the same image
            (different methods and/or classes: the explorer gets a method and a class switch).
        index: which image of the explanations.
        options: :class:`~layerscope.render.options.RenderOptions` (colormap, alpha, scale,
            duration, side_by_side, max_side are used).
        title: a line above the explorer.
        series: the chart's per-layer series ``{name: values}`` (default: peak distance to the
            last layer's peak, and area at ≥ ½ max).
        assets: include the style and the script (set ``False`` for all but one fragment of a
            page, or include :func:`explorer_assets` once).
        element_id: the element's id (default: derived from the content).
        static: include a still picture (the last layer's frame, at most
            :data:`STATIC_MAX_SIDE` px) shown where scripts are stripped (GitHub, nbviewer)
            and hidden by the script (default: with ``assets``, as in a notebook).
    """
    from markupsafe import Markup

    exps = [explanations] if hasattr(explanations, "cams") else list(explanations)
    data = explorer_data(exps, index, options, title=title, series=series)
    static_src = _static_src(exps[0], index, options) if (assets if static is None else static) else None
    data_json = _json_for_script(data)
    css, js = explorer_assets()
    first_view = next(iter(data["views"].values()))
    fusion = getattr(exps[0], "fusion", None)
    last = fusion.caption if fusion is not None else f"{exps[0].layers[-1]}: the last layer's map"
    return _template("explorer_fragment.html.j2").render(
        assets=assets,
        static_src=static_src,
        static_alt=f"{last} (a still: the interactive explorer needs scripts)",
        css=Markup(css),
        js=Markup(js),
        element_id=element_id or "ls-" + hashlib.sha1(data_json.encode()).hexdigest()[:12],
        title=title,
        side_by_side=data["side_by_side"],
        image_src=data["image"]["src"],
        width=data["image"]["width"],
        height=data["image"]["height"],
        n_layers=len(first_view["layers"]),
        methods=data["methods"],
        classes=data["classes"],
        switch=data["switch"],
        alpha=data["alpha"],
        data_json=Markup(data_json),
    )


def explorer_page(
    explanations: Sequence[Any] | Any,
    index: int = 0,
    options: RenderOptions | None = None,
    *,
    title: str | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
) -> str:
    """A complete, self-contained HTML page with one explorer (see :func:`explorer_fragment`)."""
    from markupsafe import Markup

    from layerscope._version import __version__

    exps = [explanations] if hasattr(explanations, "cams") else list(explanations)
    first = exps[0]
    methods = ", ".join(dict.fromkeys(e.method for e in exps))
    heading = title or f"layerscope · {methods} · {plural(len(first.layers), 'layer')}"
    fragment = explorer_fragment(exps, index, options, title=heading, series=series, assets=False)
    css, js = explorer_assets()
    return _template("explorer_page.html.j2").render(
        title=heading, version=__version__, css=Markup(css), js=Markup(js), fragment=Markup(fragment)
    )


def write_html(
    explanations: Sequence[Any] | Any,
    path: str | os.PathLike[str],
    options: RenderOptions | None = None,
    *,
    index: int = 0,
    overwrite: bool = False,
    title: str | None = None,
    series: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Write the explorer of image ``index`` of one or several explanations (e.g. one per
    method, or per class, of the same image) as one self-contained ``.html`` file."""
    from layerscope.atomic import check_writable

    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"{p}: the explorer is written as .html, not {p.suffix or '(no extension)'}")
    check_writable(p, overwrite)
    page = explorer_page(explanations, index, options, title=title, series=series)
    with atomic_file(p, overwrite) as f:
        f.write(page.encode("utf-8"))
    return p


def _html(exp: Any, path: Path, options: RenderOptions, index: int | None, overwrite: bool) -> Path:
    return write_html([exp], path, options, index=index or 0, overwrite=overwrite)


HTML = register(".html", Writer("interactive HTML explorer", _html, draws_frames=False))
