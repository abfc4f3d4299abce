"""Training the built-in demo model from scratch on :mod:`layerscope.datasets.shapes`.

Deterministic on the CPU; 5–10 minutes on 2 cores::

    python -m layerscope.training.demo --train      # writes the shipped weights
    python -m layerscope.training.demo --eval       # accuracy on fresh samples

The model itself (architecture, weights, facts) is :mod:`layerscope.models.demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from layerscope.datasets.shapes import make_dataset
from layerscope.models.demo import (
    DEFAULT_WEIGHTS,
    EVAL_SEED,
    IMAGE_SIZE,
    TRAIN_SEED,
    WIDTHS,
    DemoNet,
    accuracy,
    build,
    init_demo_,
    preprocess,
)


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str]) -> Path:
    """Write a ``.safetensors`` file atomically (``layerscope.atomic``), replacing ``path``;
    readable by everyone (a weights file is for everyone to read)."""
    from safetensors.torch import save

    from layerscope.atomic import write_bytes

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(p, save(state, metadata=metadata), overwrite=True)


def check_precision(precision: str) -> None:
    """``precision`` is ``"bf16"`` or ``"fp32"`` (else a ``ValueError``)."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', not {precision!r}")


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """``threads`` torch CPU threads and deterministic algorithms, then the caller's settings
    back as they were."""
    old_threads, old_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def make_pool(pool: int, seed: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``0 … pool-1`` of dataset seed ``seed`` at :data:`IMAGE_SIZE`: uint8 images,
    labels. Also seeds torch's global generator with ``seed``."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    images = np.empty((pool, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.empty((pool,), dtype=np.int64)
    chunk = 500
    for start in tqdm(range(0, pool, chunk), desc="making shapes", unit_scale=chunk, disable=not progress):
        n = min(chunk, pool - start)
        images[start : start + n], labels[start : start + n], _ = make_dataset(n, seed, IMAGE_SIZE, start=start)
    return images, labels


def sampler(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, channels_last: bool = False
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """``batch()`` → a seeded random batch of the pool, augmented (:func:`augment`) and
    preprocessed: ``(x, labels)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(0, len(images), size=batch_size)
        x = preprocess(augment(images[idx], rng))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(labels[idx])

    return batch


def fit(
    net: nn.Module,
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    weight_decay: float,
    precision: str,
    eval_every: int,
    progress: bool,
    desc: str,
    label_smoothing: float = 0.0,
) -> float:
    """Train ``net`` in place with cross-entropy: AdamW (weight decay on the parameters of
    two or more dimensions only), a linear warm-up over the first 5 % of ``steps``, a cosine
    decay; the forward under CPU bfloat16 autocast when ``precision="bf16"``. Every
    ``eval_every`` steps (0: never) print the accuracy on 250 fresh samples. Returns the
    final smoothed loss; ``net`` is left in train mode."""
    from tqdm import tqdm

    matrices = [p for p in net.parameters() if p.ndim > 1]
    vectors = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    net.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    avg = math.nan
    for step in bar:
        x, y = batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = nn.functional.cross_entropy(net(x).float(), y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        avg = loss.item() if step == 0 else 0.98 * avg + 0.02 * loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{avg:.3f}")
        if eval_every and (step + 1) % eval_every == 0:
            net.eval()
            bar.write(f"step {step + 1}: loss {avg:.3f}, accuracy {accuracy(net, 250):.1%}")
            net.train()
    return avg


class _TrainingNet(nn.Module):
    """The demo model with a batch norm after each conv, for training only.

    A plain 13-layer VGG without normalisation sits at chance for a long time when trained
    from scratch; with batch norm it trains in minutes. The convs and the head are the
    demo model's own modules (shared); :meth:`fold` then folds each batch norm's affine map
    into the conv before it, so the shipped model is exactly :class:`DemoNet`.
    """

    def __init__(self, model: DemoNet) -> None:
        super().__init__()
        self.model = model
        layers: list[nn.Module] = []
        self.pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
        for layer in model.features:
            layers.append(layer)
            if isinstance(layer, nn.Conv2d):
                bn = nn.BatchNorm2d(layer.out_channels)
                layers.append(bn)
                self.pairs.append((layer, bn))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.head(torch.flatten(m.pool(self.features(x)), 1))

    @torch.no_grad()
    def fold(self) -> DemoNet:
        """Fold each (eval-mode) batch norm into its conv; return the plain model."""
        for conv, bn in self.pairs:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        return self.model


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label-preserving augmentation of uint8 ``(N, H, W, 3)`` images, each on its own: one
    of the 8 flips/quarter-turns (every class is mirror-symmetric), a permutation of the
    colour channels, and half the time a colour inversion."""
    out = np.empty_like(images)
    turns = rng.integers(0, 4, size=len(images))
    flips = rng.random(len(images)) < 0.5
    inverts = rng.random(len(images)) < 0.5
    for k in range(len(images)):
        im = np.rot90(images[k], int(turns[k]))
        if flips[k]:
            im = im[:, ::-1]
        im = im[:, :, rng.permutation(3)]
        out[k] = 255 - im if inverts[k] else im
    return out


def train(
    out: str | os.PathLike[str] = DEFAULT_WEIGHTS,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = TRAIN_SEED,
    pool: int = 15000,
    threads: int = 2,
    precision: str = "bf16",
    eval_every: int = 0,
    progress: bool = True,
) -> DemoNet:
    """Train the demo model from scratch; write its weights to ``out``.

    The training set is samples ``0 … pool-1`` of dataset seed ``seed``, made once; each step
    draws a random batch of them and augments it (:func:`augment`: 8 flips and turns × 6
    channel orders × inversion). Batch norm is used while training and folded into the convs
    at the end (see ``_TrainingNet``), after its statistics are re-estimated on 32 batches.
    AdamW, a linear warm-up, a cosine decay. With ``precision="bf16"`` the forward pass runs
    under CPU bfloat16 autocast (about 1.5× faster where the CPU has bfloat16 instructions;
    the weights, the optimiser and the final statistics stay float32). Deterministic on the
    CPU for a given ``threads`` and machine: seeded initialisation, data and sampling;
    deterministic algorithms.

    Args:
        out: the ``.safetensors`` file to write (atomically: temporary file + rename).
        steps: optimiser steps.
        batch_size: samples per step.
        lr: peak learning rate.
        seed: seed of the training data, the sampling and the initialisation.
        pool: number of distinct training samples.
        threads: torch CPU threads (results depend on it, so it is fixed).
        precision: ``"bf16"`` (autocast) or ``"fp32"``.
        eval_every: every so many steps, print the accuracy on 250 fresh samples (0: never).
        progress: show tqdm progress bars.

    Returns:
        The trained model, in eval mode.
    """
    check_precision(precision)
    with deterministic(threads):
        return _train(Path(out), steps, batch_size, lr, seed, pool, precision, eval_every, progress, threads)


def _train(
    out: Path,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    pool: int,
    precision: str,
    eval_every: int,
    progress: bool,
    threads: int,
) -> DemoNet:
    images, labels = make_pool(pool, seed, progress)
    batch = sampler(images, labels, batch_size, seed, channels_last=True)
    model = DemoNet()
    init_demo_(model, seed)
    net = _TrainingNet(model).to(memory_format=torch.channels_last)
    fit(net, batch, steps, lr, 5e-4, precision, eval_every, progress, "training demo model")
    # Re-estimate the batch-norm statistics with the final weights (a plain average).
    with torch.no_grad():
        for _, bn in net.pairs:
            bn.reset_running_stats()
            bn.momentum = None
        for _ in range(32):
            net(batch()[0])
    net.eval()
    model = net.fold().to(memory_format=torch.contiguous_format).eval()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    settings = {
        "model": "layerscope demo (VGG-style, shapes)",
        "image_size": IMAGE_SIZE,
        "widths": list(WIDTHS),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "pool": pool,
        "threads": threads,
        "precision": precision,
        "torch": torch.__version__,
    }
    # One metadata entry: safetensors writes several in a random order, and the file should
    # come out byte for byte the same when retrained.
    save_weights(state, out, {"layerscope_demo": json.dumps(settings, sort_keys=True)})
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m layerscope.training.demo --train | --eval``."""
    return run_cli(
        argv,
        prog="python -m layerscope.training.demo",
        doc=__doc__,
        train=train,
        build=build,
        out=DEFAULT_WEIGHTS,
        steps=2000,
        lr=3e-3,
        threads=2,
    )


def run_cli(
    argv: Sequence[str] | None,
    *,
    prog: str,
    doc: str | None,
    train: Callable[..., nn.Module],
    build: Callable[[str], nn.Module],
    out: Path,
    steps: int,
    lr: float,
    threads: int,
    precision: str = "bf16",
) -> int:
    """The ``--train | --eval`` command line of a demo model's training module, with that
    module's ``train`` and ``build`` and its defaults."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    p.add_argument("--train", action="store_true", help="train from scratch and write the weights")
    p.add_argument("--eval", action="store_true", help="measure the accuracy of the weights on fresh samples")
    p.add_argument("--out", type=Path, default=out, help="weights file to write (default: the shipped one)")
    p.add_argument("--weights", default="default", help="weights to evaluate (default: the shipped ones)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimiser steps (default: {steps})")
    p.add_argument("--batch-size", type=int, default=64, help="samples per step (default: 64)")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr:g})")
    p.add_argument("--pool", type=int, default=15000, help="distinct training samples (default: 15000)")
    p.add_argument(
        "--precision", choices=("bf16", "fp32"), default=precision, help=f"forward precision (default: {precision})"
    )
    p.add_argument("--eval-every", type=int, default=0, help="print accuracy every so many steps (default: never)")
    p.add_argument("--seed", type=int, default=TRAIN_SEED, help=f"training seed (default: {TRAIN_SEED})")
    p.add_argument("--threads", type=int, default=threads, help=f"torch CPU threads (default: {threads})")
    p.add_argument("--n", type=int, default=1000, help="samples for --eval (default: 1000)")
    args = p.parse_args(argv)
    if not (args.train or args.eval):
        p.error("nothing to do: pass --train and/or --eval")
    weights = args.weights
    if args.train:
        t0 = time.perf_counter()
        train(
            args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            pool=args.pool,
            threads=args.threads,
            precision=args.precision,
            eval_every=args.eval_every,
        )
        print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
        weights = str(args.out)
    if args.eval:
        torch.set_num_threads(args.threads)
        acc = accuracy(build(weights), args.n)
        print(f"accuracy of {weights} on {args.n} fresh samples (dataset seed {EVAL_SEED}): {acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
