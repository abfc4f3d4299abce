"""Every CAM method on the demo model: pointing game at two layers, and the 13-layer tour's time.

* Pointing game (:func:`layerscope.evaluate.pointing_game`): the share of fresh shapes samples
  (dataset seed ``EVAL_SEED`` of :mod:`layerscope.models.demo`, never used in training)
  whose map's maximum lies on the object, explaining the true class, at the last conv layer
  (block5_conv3) and a middle one (block3_conv3). The perturbation methods (every channel
  evaluated) use the first ``--n-perturbation`` of the same samples.
* Time: one image's 13-layer tour (``explain`` at every conv layer), median of ``--repeats``
  runs (``--repeats-perturbation`` for Score-CAM and Ablation-CAM) after one warm-up,
  relative to ``gradcam``; the perturbation methods also with ``--top-k`` channels.

Usage::

    python benchmarks/methods_table.py [--n 300] [--n-perturbation 100] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

LAYERS = ("block3_conv3", "block5_conv3")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the methods table (markdown)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="samples for the pointing game (default: 300)")
    p.add_argument("--n-perturbation", type=int, default=100, help="samples for scorecam/ablationcam (default: 100)")
    p.add_argument("--repeats", type=int, default=15, help="timed tours per method (default: 15)")
    p.add_argument(
        "--repeats-perturbation", type=int, default=3, help="timed tours of scorecam/ablationcam (default: 3)"
    )
    p.add_argument("--top-k", type=int, default=16, help="also time the perturbation methods with this top_k")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--weights", default="default", help="demo weights: default, random or a path")
    p.add_argument("--batch-size", type=int, default=50, help="images per explain() call (default: 50)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = p.parse_args(argv)

    import torch

    import layerscope
    from layerscope.datasets import make_dataset
    from layerscope.evaluate import pointing_game
    from layerscope.models import demo

    torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else layerscope.list_methods()
    model = demo.build(args.weights)
    images, labels, masks = make_dataset(args.n, demo.EVAL_SEED, demo.IMAGE_SIZE)
    with torch.no_grad():
        accuracy = float((model(demo.preprocess(images)).argmax(dim=1).numpy() == labels).mean())

    rows = []
    for method in methods:
        kind = layerscope.get_method(method).kind
        n = min(args.n, args.n_perturbation) if kind == "perturbation" else args.n
        cams: dict[str, list[np.ndarray]] = {name: [] for name in LAYERS}
        for start in range(0, n, args.batch_size):
            sl = slice(start, min(start + args.batch_size, n))
            exp = layerscope.explain(
                model, demo.preprocess(images[sl]), layers=list(LAYERS), method=method, target=labels[sl].tolist()
            )
            for name in LAYERS:
                cams[name].append(exp.cams[name])
        hits = {name: pointing_game(np.concatenate(cams[name]), masks[:n]) for name in LAYERS}
        rows.append((method, n, hits))
        print(f"pointing game: {method} done ({n} samples)", file=sys.stderr)

    image = np.asarray(demo.sample_image()[0])

    def tour(method: str, **options: object) -> float:
        t0 = time.perf_counter()
        layerscope.explain(model, image, method=method, **options)
        return time.perf_counter() - t0

    timed: list[tuple[str, float, int]] = []
    for method in methods:
        variants = [(method, {})]
        if layerscope.get_method(method).kind == "perturbation":
            variants.append((f"{method} (top_k={args.top_k})", {"top_k": args.top_k}))
        for label, options in variants:
            tour(method, **options)  # warm-up
            slow = layerscope.get_method(method).kind == "perturbation"
            repeats = max(1, args.repeats_perturbation if slow else args.repeats)
            times = [tour(method, **options) for _ in range(repeats)]
            timed.append((label, statistics.median(times), repeats))
            print(f"timing: {label} done", file=sys.stderr)
    base = next(t for label, t, _ in timed if label == "gradcam")

    print(f"demo model, weights {args.weights!r}: top-1 accuracy {accuracy:.3f} on the {args.n} samples; "
          f"torch {torch.__version__}, {args.threads} thread(s)\n")  # fmt: skip
    print("| method | samples | pointing game, block3_conv3 | pointing game, block5_conv3 |")
    print("|---|---:|---:|---:|")
    for method, n, hits in rows:
        cells = [f"{h.mean():.3f} ({int(h.sum())}/{n})" for h in (hits[name] for name in LAYERS)]
        print(f"| {method} | {n} | {cells[0]} | {cells[1]} |")
    print("\n| method | 13-layer tour, median s | × gradcam | runs |")
    print("|---|---:|---:|---:|")
    for label, t, repeats in timed:
        print(f"| {label} | {t:.4f} | {t / base:.1f} | {repeats} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
