"""How far ``--maps-dtype float16`` is from float32 on real maps.

Grad-CAM at every conv layer of the trained demo model on ``--n`` shapes images (96×96)
and of VGG16 (random weights) on ``--vgg-n`` images at 224×224; each map is rounded to
float16 as the maps store does (each map divided by its peak, stored as float16, multiplied back when
read), and the error is reported relative to the map's largest absolute value (what a
display normalises by), relative to each value, and absolutely. Run::

    python benchmarks/maps_float16.py --n 256 --vgg-n 8
"""

from __future__ import annotations

import argparse

import numpy as np


def errors(cams: dict[str, np.ndarray]) -> tuple[float, float, float, float]:
    """The maps written to a float16 maps store and read back: the max error relative to
    each map's peak (largest absolute value), the max error relative to the value itself
    over values above 1/1000 of their map's peak, the max absolute error, and the smallest
    map peak (plain float16 holds 11 significant bits only above 6.1e-5)."""
    import tempfile
    from pathlib import Path

    from layerscope.batch import maps_store

    layers = list(cams)
    n = len(cams[layers[0]])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "part-000001.arrow"
        w = maps_store.ShardWriter(path, layers, "float16")
        for i in range(n):
            w.add(str(i), {k: cams[k][i] for k in layers})
        w.commit()
        table = maps_store.open_shard(path)
        back = {k: np.concatenate(maps_store.column_maps(table, k)) for k in layers}
    rel_peak = rel_value = abs_err = 0.0
    low = np.inf
    for k in layers:
        m32 = np.asarray(cams[k], np.float32)
        err = np.abs(back[k] - m32)
        peak = np.abs(m32).reshape(n, -1).max(axis=1).reshape(n, 1, 1)
        ok = peak > 0
        rel_peak = max(rel_peak, float((err / np.where(ok, peak, 1.0)).max()))
        big = np.abs(m32) > peak / 1000
        if big.any():
            rel_value = max(rel_value, float((err[big] / np.abs(m32[big])).max()))
        abs_err = max(abs_err, float(err.max()))
        low = min(low, float(peak[ok].min()) if ok.any() else np.inf)
    return rel_peak, rel_value, abs_err, low


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--vgg-n", type=int, default=8)
    args = ap.parse_args()

    import layerscope
    from layerscope.datasets.shapes import make_sample

    cases = [
        ("demo (trained), 96²", "demo", None, 96, args.n),
        ("vgg16 (random), 224²", "vgg16", "random", 224, args.vgg_n),
    ]
    for title, name, weights, size, n in cases:
        if n <= 0:
            continue
        model = layerscope.load_model(name) if weights is None else layerscope.load_model(name, weights=weights)
        cams: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, 32 if size < 200 else 4):
            images = [make_sample(1, i, size)[0] for i in range(start, min(n, start + (32 if size < 200 else 4)))]
            exp = layerscope.explain(model, images)
            for layer in exp.layers:
                cams.setdefault(layer, []).append(np.asarray(exp.cams[layer]))
        joined = {k: np.concatenate(v) for k, v in cams.items()}
        rel_peak, rel_value, abs_err, low = errors(joined)
        print(
            f"{title}: {n} images × {len(joined)} layers: max error / map peak = {rel_peak:.3g}, "
            f"max error / value (values > peak/1000) = {rel_value:.3g}, max |f16 − f32| = {abs_err:.3g}, "
            f"smallest map peak {low:.3g}"
        )


if __name__ == "__main__":
    main()
