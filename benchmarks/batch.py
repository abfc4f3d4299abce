"""Throughput of a dataset run (``layerscope.run_dataset``) against plain ``explain`` calls.

Images: ``--n`` samples of the synthetic shapes dataset (96×96) and the built-in demo model
(13 conv layers, Grad-CAM at every one), on the CPU. Four ways, each timed end to end:

* ``loop``: a Python loop calling ``explain`` on one decoded image at a time (no outputs);
  measured on the first ``--loop-n`` images (it is slow) and reported per image;
* ``bare``: ``explain`` on batches of ``--batch-size`` images decoded and preprocessed
  beforehand (no outputs): the floor a pipeline can reach;
* ``run none``: ``run_dataset(..., save="none")``: decode in workers, capture, statistics
  and the manifest;
* ``run npz``: the same, also writing every item's maps as a compressed ``.npz``.

The run rows also show where the time goes (seconds: waiting for data, in ``explain``,
waiting for the writer in the main process; decoding summed over the readers;
rendering/writing and committing in the writer). Run::

    python benchmarks/batch.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="images (default: 2000)")
    ap.add_argument("--loop-n", type=int, default=200, help="images for the per-image loop (default: 200)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--runs", default="none,npz", help="run_dataset save kinds to time (default: none,npz)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    import torch

    import layerscope
    from layerscope.batch import run_dataset
    from layerscope.datasets.shapes import make_sample
    from layerscope.info import info_for

    if args.threads:
        torch.set_num_threads(args.threads)
    model = layerscope.load_model("demo")
    info = info_for(model)
    prep = info.preprocessor()
    results: dict[str, dict[str, float]] = {}

    t0 = time.perf_counter()
    images = [make_sample(1, i, 96)[0] for i in range(args.n)]
    decode_s = time.perf_counter() - t0
    print(f"decode (make {args.n} shapes images, one process): {decode_s:.1f} s ({args.n / decode_s:.0f} images/s)")

    layerscope.explain(model, images[:2])  # warm-up
    n_loop = min(args.loop_n, args.n)
    t0 = time.perf_counter()
    for img in images[:n_loop]:
        layerscope.explain(model, [img])
    s = time.perf_counter() - t0
    results["loop"] = {"images_per_s": n_loop / s, "seconds": s, "images": n_loop}

    xs = [np.asarray(prep(images[i : i + args.batch_size])) for i in range(0, args.n, args.batch_size)]
    t0 = time.perf_counter()
    for x in xs:
        layerscope.explain(model, x)
    s = time.perf_counter() - t0
    results["bare"] = {"images_per_s": args.n / s, "seconds": s, "images": args.n}
    del xs, images

    for save in [s for s in args.runs.split(",") if s]:
        out = Path(tempfile.mkdtemp(prefix="ls-bench-"))
        try:
            r = run_dataset(
                shapes=args.n,
                out_dir=out / "run",
                model=model,
                save=save,
                batch_size=args.batch_size,
                workers=args.workers,
                progress="none",
                target="label",
            )
            results[f"run {save}"] = {
                "images_per_s": r.done / r.seconds,
                "seconds": r.seconds,
                "images": r.done,
                **{f"t_{k}": v for k, v in r.timings.items()},
            }
        finally:
            shutil.rmtree(out, ignore_errors=True)

    bare = results["bare"]["images_per_s"]
    print(f"\n{'way':10s} {'images/s':>9s} {'× bare':>7s} {'seconds':>8s}  time shares (s)")
    for name, r in results.items():
        shares = ", ".join(f"{k[2:]} {v:.1f}" for k, v in r.items() if k.startswith("t_"))
        print(f"{name:10s} {r['images_per_s']:9.1f} {r['images_per_s'] / bare:7.2f} {r['seconds']:8.1f}  {shares}")
    threads = torch.get_num_threads()
    print(f"\ntorch {torch.__version__}, {threads} threads; batch size {args.batch_size}, {args.workers} readers")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
