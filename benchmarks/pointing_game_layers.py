"""Pointing game at every layer of the built-in demo model, on fresh shapes samples.

For each CAM method and each of the 13 conv layers (block1_conv1 … block5_conv3), the share
of images whose map's maximum lies on the object (:func:`layerscope.evaluate.pointing_game`),
explaining the true class. Also prints the model's accuracy on the same images. The samples
come from dataset seed ``EVAL_SEED`` of :mod:`layerscope.models.demo`, never used in training.

Usage::

    python benchmarks/pointing_game_layers.py [--n 1000] [--methods gradcam,...] [--weights default]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    """Print the per-layer pointing-game table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="number of fresh samples (default: 1000)")
    p.add_argument("--methods", default="gradcam", help="comma-separated CAM methods (default: gradcam)")
    p.add_argument("--weights", default="default", help="demo weights: default, random or a path")
    p.add_argument("--seed", type=int, default=None, help="dataset seed (default: the demo's EVAL_SEED)")
    p.add_argument("--batch-size", type=int, default=250, help="images per explain() call (default: 250)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = p.parse_args(argv)

    import torch

    import layerscope
    from layerscope.datasets import make_dataset
    from layerscope.evaluate import pointing_game
    from layerscope.info import model_info
    from layerscope.models import demo

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seed = demo.EVAL_SEED if args.seed is None else args.seed
    model = demo.build(args.weights)
    layers = list(model_info(model).layers)
    images, labels, masks = make_dataset(args.n, seed, demo.IMAGE_SIZE)

    correct = 0
    hits: dict[str, dict[str, list[np.ndarray]]] = {m: {name: [] for name in layers} for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    shapes: dict[str, tuple[int, ...]] = {}
    for start in range(0, args.n, args.batch_size):
        sl = slice(start, start + args.batch_size)
        x = demo.preprocess(images[sl])
        with torch.no_grad():
            correct += int((model(x).argmax(dim=1).numpy() == labels[sl]).sum())
        for method in methods:
            t0 = time.perf_counter()
            exp = layerscope.explain(model, x, layers=layers, method=method, target=labels[sl].tolist())
            seconds[method] += time.perf_counter() - t0
            for name in layers:
                hits[method][name].append(pointing_game(exp.cams[name], masks[sl]))
                shapes[name] = tuple(exp.shapes[name])

    print(f"demo model ({args.weights} weights), {args.n} fresh samples of dataset seed {seed}, target = true class")
    print(f"accuracy: {correct / args.n:.1%}")
    h, w = masks.shape[1:]
    print(
        f"baselines: a map that always peaks at the image centre scores {masks[:, h // 2, w // 2].mean():.1%}; "
        f"a uniformly random point {masks.mean():.1%} (the mean object area)"
    )
    print()
    header = "| layer | output | " + " | ".join(methods) + " |"
    print(header)
    print("|---|---|" + "---:|" * len(methods))
    for name in layers:
        shape = "×".join(str(s) for s in shapes[name])
        cells = " | ".join(f"{np.concatenate(hits[m][name]).mean():.1%}" for m in methods)
        print(f"| {name} | {shape} | {cells} |")
    print()
    for method in methods:
        print(f"{method}: {seconds[method]:.1f} s for all 13 layers of {args.n} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
