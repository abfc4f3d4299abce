"""Training the built-in demo detector from scratch on :mod:`layerscope.datasets.scenes`.

Deterministic on the CPU for a given thread count and machine::

    python -m layerscope.training.demo_detector --train    # writes the shipped weights
    python -m layerscope.training.demo_detector --eval     # mAP@0.5 on 300 fresh scenes

``layerscope train-detector`` runs the same training. The model itself (architecture,
decoding, weights, facts) is :mod:`layerscope.models.demo_detector`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from layerscope.datasets.scenes import Annotation, make_scenes
from layerscope.models.demo_detector import (
    DEFAULT_WEIGHTS,
    EVAL_SEED,
    IMAGE_SIZE,
    STRIDE,
    TRAIN_SEED,
    DemoDetector,
    build,
    init_detector_,
    map50,
    preprocess,
)
from layerscope.training.demo import save_weights

#: Weight of the box head's L1 loss beside the heatmap's focal loss.
BOX_WEIGHT = 1.0


def _blocks(model: DemoDetector) -> list[nn.Sequential]:
    """The conv + ReLU blocks (every conv but the two heads' last)."""
    return [m for m in model.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d)]


def add_batch_norm_(model: DemoDetector) -> None:
    """Put a batch norm between each block's conv and its ReLU (training only)."""
    for block in _blocks(model):
        block.insert(1, nn.BatchNorm2d(block[0].out_channels))


@torch.no_grad()
def fold_batch_norm_(model: DemoDetector) -> None:
    """Fold each (eval-mode) batch norm into its conv and take it out: the plain model again."""
    for block in _blocks(model):
        conv, bn = block[0], block[1]
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        del block[1]


def _augment(
    images: np.ndarray, annotations: Sequence[Annotation], rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each scene on its own: one of the 8 flips/transpositions (boxes moved with it), a
    permutation of the colour channels, and half the time a colour inversion."""
    out = np.empty_like(images)
    boxes_out = []
    side = images.shape[1]
    for k, (boxes, _) in enumerate(annotations):
        im, b = images[k], boxes.copy()
        if rng.random() < 0.5:  # transpose
            im, b = im.transpose(1, 0, 2), b[:, [1, 0, 3, 2]]
        if rng.random() < 0.5:  # left-right
            im, b = im[:, ::-1], np.stack([side - b[:, 2], b[:, 1], side - b[:, 0], b[:, 3]], axis=1)
        if rng.random() < 0.5:  # up-down
            im, b = im[::-1], np.stack([b[:, 0], side - b[:, 3], b[:, 2], side - b[:, 1]], axis=1)
        im = im[:, :, rng.permutation(3)]
        out[k] = 255 - im if rng.random() < 0.5 else im
        boxes_out.append(b.astype(np.float32))
    return out, boxes_out


def targets(
    boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int, grid: int
) -> dict[str, torch.Tensor]:
    """CenterNet's training targets on a ``grid × grid`` map: a Gaussian bump per object at
    its centre cell in its class's heatmap (σ = a sixth of its size, ≥ 0.5 cell; 1 at the
    centre), and at that cell the box (log width, log height in cells, offset in the cell)."""
    n = len(boxes)
    heat = np.zeros((n, num_classes, grid, grid), dtype=np.float32)
    box = np.zeros((n, 4, grid, grid), dtype=np.float32)
    where = np.zeros((n, grid, grid), dtype=bool)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        for (x0, y0, x1, y1), c in zip(b, lab, strict=True):
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
            gx, gy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            sx, sy = max(w / 6, 0.5), max(h / 6, 0.5)
            bump = np.exp(-((xs - gx) ** 2) / (2 * sx**2) - (ys - gy) ** 2 / (2 * sy**2))
            heat[i, c] = np.maximum(heat[i, c], bump)
            box[i, :, gy, gx] = (math.log(w), math.log(h), cx - gx, cy - gy)
            where[i, gy, gx] = True
    return {"heatmap": torch.from_numpy(heat), "box": torch.from_numpy(box), "where": torch.from_numpy(where)}


def loss(raw: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """CenterNet's loss: the penalty-reduced focal loss on the heatmap (α = 2, β = 4), per
    object, plus :data:`BOX_WEIGHT` × the L1 loss of the box at the objects' centre cells."""
    logits, t = raw["heatmap"].float(), target["heatmap"]
    p = torch.sigmoid(logits)
    pos = t >= 1.0
    log_p, log_1p = F.logsigmoid(logits), F.logsigmoid(-logits)
    focal = torch.where(pos, (1 - p) ** 2 * log_p, (1 - t) ** 4 * p**2 * log_1p)
    n_pos = pos.sum().clamp(min=1)
    where = target["where"]
    l1 = (raw["box"].float() - target["box"]).abs().sum(dim=1)[where].sum()
    return (-focal.sum() + BOX_WEIGHT * l1) / n_pos


def train(
    out: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
    steps: int = 1600,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = TRAIN_SEED,
    pool: int = 8000,
    threads: int = 1,
    eval_every: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DemoDetector:
    """Train the demo detector from scratch; write its weights to ``out`` (``None``: don't).

    The training set is scenes ``0 … pool-1`` of seed ``seed``, made once; each step draws a
    random batch of them and augments it (``_augment``). Batch norm is used while training
    and folded into the convs at the end, after its statistics are re-estimated on 16
    batches. AdamW, a linear warm-up, a cosine decay, fp32. Deterministic on the CPU for a
    given ``threads`` and machine (seeded data, sampling and initialisation; deterministic
    algorithms); the caller's torch settings are restored.

    Returns:
        The trained (plain) model, in eval mode.
    """
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(out, steps, batch_size, lr, seed, pool, threads, eval_every, progress, log or print)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _train(
    out: str | os.PathLike[str] | None,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    pool: int,
    threads: int,
    eval_every: int,
    progress: bool,
    log: Callable[[str], None],
) -> DemoDetector:
    from tqdm import tqdm

    torch.manual_seed(seed)
    images, annotations, _ = make_scenes(pool, seed, IMAGE_SIZE)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    grid = IMAGE_SIZE // STRIDE

    def batch() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        idx = rng.integers(0, pool, size=batch_size)
        ims, boxes = _augment(images[idx], [annotations[i] for i in idx], rng)
        return preprocess(ims), targets(boxes, [annotations[i][1] for i in idx], 10, grid)

    model = DemoDetector()
    init_detector_(model, seed)
    add_batch_norm_(model)
    matrices = [p for p in model.parameters() if p.ndim > 1]
    vectors = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 1e-4}, {"params": vectors, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    avg = None
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc="training demo detector", unit="step", disable=not progress):
        x, t = batch()
        value = loss(model.raw(x), t)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        avg = value.item() if avg is None else 0.98 * avg + 0.02 * value.item()
        if eval_every and (step + 1) % eval_every == 0:
            model.eval()
            log(f"step {step + 1}: loss {avg:.3f}, mAP@0.5 (100 scenes) {map50(model, 100):.3f}, "
                f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
            model.train()
    with torch.no_grad():  # re-estimate the batch-norm statistics with the final weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for _ in range(16):
            model.raw(batch()[0])
    model.eval()
    fold_batch_norm_(model)
    if out is not None:
        settings = {
            "model": "layerscope demo detector (CenterNet-style, shapes scenes)",
            "image_size": IMAGE_SIZE, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
            "pool": pool, "threads": threads, "torch": torch.__version__,
        }  # fmt: skip
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_weights(state, out, {"layerscope_demo_detector": json.dumps(settings, sort_keys=True)})
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m layerscope.training.demo_detector --train | --eval``."""
    p = argparse.ArgumentParser(prog="python -m layerscope.training.demo_detector", description=__doc__.splitlines()[0])
    p.add_argument("--train", action="store_true", help="train from scratch and write the weights")
    p.add_argument("--eval", action="store_true", help="measure mAP@0.5 of the weights on fresh scenes")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write (default: the shipped one)")
    p.add_argument("--weights", default="default", help="weights to evaluate (default: the shipped ones)")
    p.add_argument("--steps", type=int, default=1600, help="optimiser steps (default: 1600)")
    p.add_argument("--batch-size", type=int, default=32, help="scenes per step (default: 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--pool", type=int, default=8000, help="distinct training scenes (default: 8000)")
    p.add_argument("--eval-every", type=int, default=0, help="print mAP every so many steps (default: never)")
    p.add_argument("--seed", type=int, default=TRAIN_SEED, help=f"training seed (default: {TRAIN_SEED})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--n", type=int, default=300, help="scenes for --eval (default: 300)")
    args = p.parse_args(argv)
    if not (args.train or args.eval):
        p.error("nothing to do: pass --train and/or --eval")
    weights = args.weights
    if args.train:
        t0 = time.perf_counter()
        train(args.out, args.steps, args.batch_size, args.lr, args.seed, args.pool, args.threads, args.eval_every)
        print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)", flush=True)
        weights = str(args.out)
    if args.eval:
        torch.set_num_threads(args.threads)
        value = map50(build(weights), args.n)
        print(f"mAP@0.5 of {weights} on {args.n} fresh scenes (seed {EVAL_SEED}): {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
