"""Throughput of a dataset run (``layerscope.run_dataset``) against plain ``explain`` calls.

Images: ``--n`` samples of the synthetic shapes dataset, on the CPU, Grad-CAM at every conv
layer. The runs read them (``--source``) as a folder of PNG files written before the timing
(``png``, the default: what a real data set is, the reading cost a PNG decode), or from the
shapes generator itself (``shapes``: each item drawn in the readers, a few times the cost of
decoding its PNG). Two models (``--model``):

* ``demo``: the built-in demo model (13 conv layers) at 96×96, batches of 32;
* ``vgg16``: VGG16 (random weights: the speed is the same) at 224×224, batches of 8.

Ways, each timed end to end:

* ``loop``: a Python loop calling ``explain`` on one decoded image at a time (no outputs);
  measured on the first ``--loop-n`` images (it is slow) and reported per image;
* ``bare``: ``explain`` on batches decoded and preprocessed beforehand (no outputs): the
  floor a pipeline can reach;
* ``run none``: ``run_dataset(..., save="none")``: decode in readers, capture, statistics
  and the manifest;
* ``run maps``: the same, also writing every item's maps to the run's columnar store;
* ``run npz``: the same, writing every item's maps as a compressed ``.npz`` instead.

The bare way and the runs are timed in ``--rounds`` interleaved rounds (bare, then each run,
again; 3 by default): each way's row is its median round, and the ratios of every round are
printed beside it — the machine's speed drifts by 10–20 % over minutes, which a bare rate
measured once before the runs would put into their ratios. The run rows show where the time
goes, in seconds: ``decode`` (reading and preprocessing,
summed over the readers), ``capture`` (in ``explain``), ``write`` (statistics, files and
manifest parts, in the writer), and ``wait`` (the main process waiting for data or for the
writer). The machine's load average is printed first and last: measure on a quiet machine.
Run::

    python benchmarks/batch.py --model demo --n 2000 --runs none,maps,npz
    python benchmarks/batch.py --model vgg16 --n 96 --runs none,maps
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {"demo": {"size": 96, "batch_size": 32}, "vgg16": {"size": 224, "batch_size": 8}}


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(MODELS), default="demo")
    ap.add_argument("--n", type=int, default=None, help="images (default: 2000 demo, 96 vgg16)")
    ap.add_argument("--loop-n", type=int, default=None, help="images for the per-image loop (default: n/10)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 demo, 8 vgg16")
    ap.add_argument("--workers", type=int, default=None, help="reader processes (default: run_dataset's)")
    ap.add_argument("--writers", type=int, default=None, help="writer processes (default: run_dataset's)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--runs", default="none,maps,npz", help="run_dataset save kinds to time (default: none,maps,npz)")
    ap.add_argument("--maps-dtype", default="float32")
    ap.add_argument(
        "--source",
        choices=["png", "shapes"],
        default="png",
        help="what the runs read: a folder of PNG files (default) or the shapes generator",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every way; medians (default 3)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    spec = MODELS[args.model]
    n = args.n or (2000 if args.model == "demo" else 96)
    batch_size = args.batch_size or spec["batch_size"]
    size = spec["size"]

    import torch

    import layerscope
    from layerscope.batch import run_dataset
    from layerscope.batch.sources import ShapesSource
    from layerscope.datasets.shapes import make_sample
    from layerscope.info import info_for

    print(f"load average at the start: {load()} ({os.cpu_count()} CPUs)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = layerscope.load_model("demo") if args.model == "demo" else layerscope.load_model("vgg16", weights="random")
    info = info_for(model)
    prep = info.preprocessor()
    results: dict[str, dict[str, float]] = {}

    t0 = time.perf_counter()
    images = [make_sample(1, i, size)[0] for i in range(n)]
    decode_s = time.perf_counter() - t0
    print(f"make {n} shapes images at {size}², one process: {decode_s:.1f} s ({n / decode_s:.0f} images/s)")
    png_dir = Path(tempfile.mkdtemp(prefix="ls-bench-png-"))
    if args.source == "png":
        from PIL import Image

        for i, img in enumerate(images):
            Image.fromarray(img).save(png_dir / f"{i:06d}.png")
        t0 = time.perf_counter()
        for f in sorted(png_dir.iterdir()):
            with Image.open(f) as im:
                np.asarray(im.convert("RGB"))
        s = time.perf_counter() - t0
        print(f"decode the {n} PNG files, one process: {s:.1f} s ({n / s:.0f} images/s)")

    layerscope.explain(model, images[:2])  # warm-up
    n_loop = min(args.loop_n or max(1, n // 10), n)
    t0 = time.perf_counter()
    for img in images[:n_loop]:
        layerscope.explain(model, [img])
    s = time.perf_counter() - t0
    results["loop"] = {"images_per_s": n_loop / s, "seconds": s, "images": n_loop}

    xs = [np.asarray(prep(images[i : i + batch_size])) for i in range(0, n, batch_size)]
    del images

    def time_bare() -> dict[str, float]:
        t0 = time.perf_counter()
        for x in xs:
            layerscope.explain(model, x)
        s = time.perf_counter() - t0
        return {"images_per_s": n / s, "seconds": s, "images": n}

    options = {k: v for k, v in (("workers", args.workers), ("writers", args.writers)) if v is not None}
    saves = [s for s in args.runs.split(",") if s]

    def time_run(save: str, source: object, out_dir: Path) -> dict[str, float]:
        r = run_dataset(
            source,
            out_dir=out_dir,
            model=model,
            save=save,
            maps_dtype=args.maps_dtype,
            batch_size=batch_size,
            progress="none",
            target="label" if args.model == "demo" and args.source == "shapes" else None,
            **options,
        )
        t = r.timings
        shares = {
            "decode": t.get("decode", 0.0),
            "capture": t.get("capture", 0.0),
            "write": t.get("render_write", 0.0) + t.get("commit", 0.0),
            "wait": max(0.0, t.get("wait_data", 0.0) - t.get("capture", 0.0)) + t.get("wait_writer", 0.0),
        }
        size_mb = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 2**20
        return {
            "images_per_s": r.done / r.seconds,
            "seconds": r.seconds,
            "images": r.done,
            **{f"t_{k}": v for k, v in shares.items()},
            "run_dir_mib": size_mb,
        }

    with tempfile.TemporaryDirectory(prefix="ls-bench-warm-") as warm:  # as explain's warm-up above:
        # the modules a run imports once per process (pyarrow's Parquet and IPC writers …)
        # must not land on whichever way is timed first
        k = min(n, 2 * batch_size)
        if args.source == "shapes":
            warm_src: object = ShapesSource(k, size=size)
        else:
            warm_src = [str(f) for f in sorted(png_dir.iterdir())[:k]]
        time_run(saves[0] if saves else "none", warm_src, Path(warm) / "run")
    rounds: list[dict[str, dict[str, float]]] = []
    for i in range(args.rounds):  # interleaved: bare, then each run, again and again
        got = {"bare": time_bare()}
        for save in saves:
            out = Path(tempfile.mkdtemp(prefix="ls-bench-"))
            try:
                source = png_dir if args.source == "png" else ShapesSource(n, size=size)
                got[f"run {save}"] = time_run(save, source, out / "run")
            finally:
                shutil.rmtree(out, ignore_errors=True)
        rounds.append(got)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v['images_per_s']:.2f}/s" for k, v in got.items()))
    shutil.rmtree(png_dir, ignore_errors=True)
    for name in rounds[0]:  # the median round of each way (its rate's median), and the ratios per round
        ordered = sorted(rounds, key=lambda r: r[name]["images_per_s"])
        results[name] = dict(ordered[len(ordered) // 2][name])
        results[name]["ratio_per_round"] = [r[name]["images_per_s"] / r["bare"]["images_per_s"] for r in rounds]

    bare = results["bare"]["images_per_s"]
    print(f"\nmedians of {args.rounds} interleaved rounds")
    print(f"\n{'way':10s} {'images/s':>9s} {'× bare':>7s} {'seconds':>8s}  time shares (s)")
    for name, r in results.items():
        shares = ", ".join(f"{k[2:]} {v:.1f}" for k, v in r.items() if k.startswith("t_"))
        if "run_dir_mib" in r:
            shares += f"; run folder {r['run_dir_mib']:.1f} MiB"
        if "ratio_per_round" in r and name != "bare":
            shares += "; × bare per round " + " / ".join(f"{x:.2f}" for x in r["ratio_per_round"])
        print(f"{name:10s} {r['images_per_s']:9.2f} {r['images_per_s'] / bare:7.2f} {r['seconds']:8.1f}  {shares}")
    threads = torch.get_num_threads()
    print(f"\nsource: {args.source}; {args.model} at {size}², torch {torch.__version__}, {threads} threads; ", end="")
    print(f"batch size {batch_size}")
    print(f"load average at the end: {load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
