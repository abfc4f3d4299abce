"""``layerscope train-detector``: train the demo detector on the synthetic shapes scenes."""

from __future__ import annotations

import argparse
import time
from typing import Any

from layerscope.cli import _common
from layerscope.errors import plural

#: The default output file (the shipped weights are written by the training module itself).
OUTPUT = "demo-detector.safetensors"


#: ``layerscope.training.demo_detector.train``'s defaults, written here so that building the
#: parser imports no torch (a ``layerscope tour`` of a huge image decodes it before torch
#: takes its memory); tests/cli/test_train_detector.py checks they are ``train``'s own.
DEFAULTS = {"steps": 1600, "batch_size": 32, "lr": 2e-3, "pool": 8000, "seed": 0, "threads": 1}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train-detector",
        help="train the demo detector (CenterNet-style) on synthetic shapes scenes and save its weights",
        description="Train the built-in demo detector from scratch on seeded multi-object shapes scenes "
        "(deterministic on the CPU for a given --threads), then save its weights (.safetensors) for "
        "`layerscope tour --model demo-detector --weights PATH` and `layerscope evaluate --model demo-detector "
        "--weights PATH --scenes N`. Prints mAP@0.5 on fresh scenes at the end.",
    )
    defaults = DEFAULTS
    p.add_argument(
        "--steps", type=_common.positive_int, default=defaults["steps"], help="optimiser steps (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=_common.positive_int,
        default=defaults["batch_size"],
        help="scenes per step (default: %(default)s)",
    )
    p.add_argument("--lr", type=float, default=defaults["lr"], help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument(
        "--pool",
        type=_common.positive_int,
        default=defaults["pool"],
        help="distinct training scenes (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults["seed"],
        help="seed of the scenes, the sampling and the initial weights (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=_common.positive_int,
        default=defaults["threads"],
        help="torch CPU threads (default: %(default)s)",
    )
    p.add_argument(
        "--eval", type=int, default=300, metavar="N", help="fresh scenes for the final mAP@0.5 (0: none; default: 300)"
    )
    p.add_argument("-o", "--output", default=OUTPUT, help=f"output file (default: {OUTPUT})")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Train, save, and print the mAP@0.5 on fresh scenes."""
    from layerscope.atomic import check_writable

    check_writable(args.output, args.overwrite)
    from layerscope.models.demo_detector import EVAL_SEED, map50
    from layerscope.training import demo_detector as T

    t0 = time.perf_counter()
    model = T.train(
        args.output, args.steps, args.batch_size, args.lr, args.seed, args.pool, args.threads,
        progress=not args.no_progress,
    )  # fmt: skip
    took = time.perf_counter() - t0
    print(f"{_common.shown(args.output)}: demo detector trained for {plural(args.steps, 'step')} ({took:.0f} s)")
    if args.eval > 0:
        print(f"mAP@0.5 on {plural(args.eval, 'fresh scene')} (seed {EVAL_SEED}): {map50(model, args.eval):.3f}")
    return 0
