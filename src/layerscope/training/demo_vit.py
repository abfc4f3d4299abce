"""Training the built-in demo ViT from scratch on :mod:`layerscope.datasets.shapes`.

Deterministic on the CPU (for a given number of threads and machine)::

    python -m layerscope.training.demo_vit --train      # writes the shipped weights
    python -m layerscope.training.demo_vit --eval       # accuracy on fresh samples

The data, augmentation, optimiser, schedule and command line are the demo CNN's
(:mod:`layerscope.training.demo`); the model is :mod:`layerscope.models.demo_vit`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from layerscope.models import demo as demo_model
from layerscope.models.demo import IMAGE_SIZE, TRAIN_SEED
from layerscope.models.demo_vit import (
    DEFAULT_WEIGHTS,
    DEPTH,
    DIM,
    GLOBAL_POOL,
    HEADS,
    MLP_RATIO,
    PATCH,
    REGISTERS,
    WINDOW,
    DemoViT,
    build,
    init_demo_vit_,
)
from layerscope.training.demo import check_precision, deterministic, fit, make_pool, run_cli, sampler, save_weights

#: Defaults of the shipped weights' training.
STEPS = 2500
LR = 1e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
THREADS = 1
#: The shipped weights were trained so (the file's metadata records it): the command line's
#: defaults reproduce them.
PRECISION = "bf16"


def train(
    out: str | os.PathLike[str] = DEFAULT_WEIGHTS,
    steps: int = STEPS,
    batch_size: int = 64,
    lr: float = LR,
    seed: int = TRAIN_SEED,
    pool: int = 15000,
    threads: int = THREADS,
    precision: str = PRECISION,
    eval_every: int = 0,
    progress: bool = True,
    global_pool: str = GLOBAL_POOL,
) -> DemoViT:
    """Train the demo ViT from scratch; write its weights to ``out`` (atomically).

    The patch embedding's conv blocks are the trained demo CNN's first three, frozen; the
    rest is trained from scratch. The training set and its augmentation are the demo CNN's (samples ``0 … pool-1`` of
    dataset seed ``seed``; 8 flips and turns × 6 channel orders × inversion); AdamW with
    weight decay :data:`WEIGHT_DECAY`, label smoothing :data:`LABEL_SMOOTHING`, a linear
    warm-up and a cosine decay (:func:`layerscope.training.demo.fit`). The arguments are
    :func:`layerscope.training.demo.train`'s; ``global_pool`` is the head's
    (:class:`layerscope.models.demo_vit.DemoViT`).

    Returns:
        The trained model, in eval mode.
    """
    check_precision(precision)
    with deterministic(threads):
        images, labels = make_pool(pool, seed, progress)
        batch = sampler(images, labels, batch_size, seed)
        model = DemoViT(global_pool=global_pool)
        init_demo_vit_(model, seed)
        stem = model.patch_embed.backbone  # the hybrid stem: the trained demo CNN's blocks 1–3, frozen
        stem.load_state_dict(demo_model.build().features[: len(stem)].state_dict())
        stem.requires_grad_(False)
        fit(
            model,
            batch,
            steps,
            lr,
            WEIGHT_DECAY,
            precision,
            eval_every,
            progress,
            "training demo ViT",
            label_smoothing=LABEL_SMOOTHING,
        )
    model.eval()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    settings = {
        "model": "layerscope demo-vit (ViT, shapes)",
        "image_size": IMAGE_SIZE,
        "patch": PATCH,
        "dim": DIM,
        "depth": DEPTH,
        "heads": HEADS,
        "mlp_ratio": MLP_RATIO,
        "reg_tokens": REGISTERS,
        "window": WINDOW,
        "global_pool": global_pool,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": WEIGHT_DECAY,
        "label_smoothing": LABEL_SMOOTHING,
        "seed": seed,
        "pool": pool,
        "threads": threads,
        "precision": precision,
        "torch": torch.__version__,
    }
    save_weights(state, Path(out), {"layerscope_demo_vit": json.dumps(settings, sort_keys=True)})
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m layerscope.training.demo_vit --train | --eval``."""
    return run_cli(
        argv,
        prog="python -m layerscope.training.demo_vit",
        doc=__doc__,
        train=train,
        build=build,
        out=DEFAULT_WEIGHTS,
        steps=STEPS,
        lr=LR,
        threads=THREADS,
        precision=PRECISION,
    )


if __name__ == "__main__":
    sys.exit(main())
