"""Does the layer :func:`layerscope.rank_layers` picks point at the object? The demo model on
fresh shapes samples (known masks), explaining the true class with Grad-CAM at all 13 conv
layers: the pointing game of each image's best-ranked layer against a fixed choice of the
last conv layer (block5_conv3), of a layer drawn at random (the mean over the fixed layers)
and of every fixed layer.

The samples come from dataset seed ``EVAL_SEED`` of :mod:`layerscope.models.demo`, never used
in training. ROAD's imputation runs on the CPU, one image at a time: ``--jobs`` splits the
images over processes (one torch thread each). ``--noise-seeds K`` ranks again with ROAD's
noise seeds 1 … K−1 (K times the cost) and says whether the picks are within that noise.

Usage::

    python benchmarks/rank_layers_pointing.py [--n 200] [--metric road] [--score logit] [--jobs 2] [--noise-seeds 1]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np


def _chunk(
    start: int, stop: int, seed: int, metric: str, method: str, score: str | None, noise_seeds: int = 1
) -> dict[str, Any]:
    """Rank the layers of images ``start … stop-1``; their best layers and pointing hits."""
    import torch

    import layerscope
    from layerscope.datasets import make_dataset
    from layerscope.evaluate import pointing_game, rank_layers
    from layerscope.models import demo

    torch.set_num_threads(1)
    model = demo.build()
    images, labels, masks = make_dataset(stop - start, seed, demo.IMAGE_SIZE, start=start)
    exp = layerscope.explain(model, list(images), method=method, target=labels.tolist())
    kw = {} if score is None else {"score": score}
    ranking = rank_layers(model, exp, metric=metric, **kw)
    others = [rank_layers(model, exp, metric=metric, seed=k, **kw).scores for k in range(1, noise_seeds)]
    hits = {name: pointing_game(exp.cams[name], masks) for name in exp.layers}
    best = ranking.best
    picked = np.array([b is not None and bool(hits[b][i]) for i, b in enumerate(best)])
    return {
        "layers": exp.layers, "best": best, "picked": picked, "hits": hits, "passes": ranking.passes,
        "scores": np.stack([ranking.scores, *others]),
    }  # fmt: skip


def _noise_report(scores: np.ndarray) -> None:
    """Are the picks within the metric's noise? ``scores`` ``(K seeds, L, N)``, higher is better."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    picks = s.argmax(axis=1)  # (K, N)
    n = s.shape[2]
    same = int((picks == picks[0]).all(axis=0).sum())
    cols = np.arange(n)
    first = picks[0]  # seed 0's pick (ties: the earliest layer, as rank_layers)
    rest = s[0].copy()
    rest[first, cols] = -np.inf
    second = rest.argmax(axis=0)
    gap = s[0, first, cols] - s[0, second, cols]
    spread = np.std(s[:, first, cols] - s[:, second, cols], axis=0, ddof=1)  # over the seeds
    print(f"noise seeds 0 … {len(s) - 1}: the same pick under every seed on {same} of {n} images")
    print(f"  best − second layer (seed 0), median over images: {np.median(gap):.4f}")
    print(f"  that difference's spread over the seeds (SD), median: {np.median(spread):.4f}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the picked layer's and the last layer's pointing game."""
    from layerscope.models import demo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="number of fresh samples (default: 200)")
    p.add_argument("--metric", default="road", help="the ranking's metric (default: road)")
    p.add_argument(
        "--score",
        choices=["probability", "logit"],
        default=None,
        help="what the ranking's metric measures (default: rank_layers's own)",
    )
    p.add_argument("--method", default="gradcam", help="the CAM method (default: gradcam)")
    p.add_argument("--seed", type=int, default=demo.EVAL_SEED, help="dataset seed (default: the demo's EVAL_SEED)")
    p.add_argument("--jobs", type=int, default=2, help="processes, each a share of the images (default: 2)")
    p.add_argument(
        "--noise-seeds", type=int, default=1, help="ROAD noise seeds to rank with, 0 … K−1 (default: 1, seed 0)"
    )
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    bounds = np.linspace(0, args.n, max(1, args.jobs) + 1).astype(int)
    parts = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    with ProcessPoolExecutor(len(parts)) as pool:
        jobs = [
            pool.submit(_chunk, a, b, args.seed, args.metric, args.method, args.score, args.noise_seeds)
            for a, b in parts
        ]
        done = [j.result() for j in jobs]
    layers = done[0]["layers"]
    best = [b for d in done for b in d["best"]]
    picked = np.concatenate([d["picked"] for d in done])
    hits = {name: np.concatenate([d["hits"][name] for d in done]) for name in layers}
    passes = sum(d["passes"] for d in done)
    by = args.metric + ("" if args.score is None else f" ({args.score})")
    print(f"{args.n} shapes images (seed {args.seed}), {args.method}, ranked by {by}: {passes:,} passes")
    print(f"pointing game, the ranking's pick per image: {picked.mean():.3f}")
    print(f"pointing game, the last layer ({layers[-1]}):  {hits[layers[-1]].mean():.3f}")
    print(f"pointing game, a layer drawn at random:     {np.mean([h.mean() for h in hits.values()]):.3f}")
    counts = Counter(best)
    print("per layer: pointing game of that fixed layer · images it is picked for")
    for name in layers:
        print(f"  {name:14s} {hits[name].mean():.3f}  {counts.get(name, 0):4d}")
    if args.noise_seeds > 1:
        _noise_report(np.concatenate([d["scores"] for d in done], axis=2))
    print(f"({time.perf_counter() - t0:.0f} s, {len(parts)} processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
