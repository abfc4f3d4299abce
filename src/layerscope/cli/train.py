"""``layerscope train-head``: train the notebook recipe's CIFAR-10 head (the VGG16 base frozen)."""

from __future__ import annotations

import argparse
from typing import Any

from layerscope.cli import _common
from layerscope.errors import plural
from layerscope.recipe import RECIPE_MODEL


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train-head",
        help="train the recipe's CIFAR-10 head (VGG16 base frozen) and save the whole model's weights",
        description="Train vgg16-cifar10's classification head (Dense 1024 → Dense 10) on CIFAR-10 features of the "
        "frozen VGG16 base, then save the model's weights (Keras: .weights.h5, torch: .safetensors) for "
        "`layerscope tour --model vgg16-cifar10 --weights PATH`.",
    )
    p.add_argument("--framework", choices=("torch", "keras"), default="keras", help="keras (default) or torch")
    p.add_argument(
        "--weights",
        default=None,
        help="the base: imagenet (default; Keras' or torchvision's published file), random, or a local weights file",
    )
    p.add_argument("--cifar10-path", metavar="PATH", help="a local cifar-10-python.tar.gz or its extracted folder")
    p.add_argument("--steps", type=_common.positive_int, default=200, help="optimisation steps (default: 200)")
    p.add_argument("--batch-size", type=_common.positive_int, default=32, help="images per step (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    p.add_argument(
        "--size", type=_common.positive_int, default=224, help="input size in pixels (default: 224, as the recipe)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order and the head's initial weights")
    p.add_argument("--limit", type=_common.positive_int, help="use only the first N training images")
    p.add_argument(
        "-o",
        "--output",
        help="output file (default: vgg16-cifar10.weights.h5 for Keras, vgg16-cifar10.safetensors for torch)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def run(args: argparse.Namespace) -> int:
    """Train the recipe's head and save the weights; prints the loss as it goes."""
    from layerscope.atomic import check_writable
    from layerscope.datasets.cifar10 import load_split

    out = args.output or ("vgg16-cifar10.weights.h5" if args.framework == "keras" else "vgg16-cifar10.safetensors")
    check_writable(out, args.overwrite)
    _common.check_size(argparse.Namespace(size=[args.size]))
    images, labels = load_split("train", args.cifar10_path, limit=args.limit)
    every = max(1, args.steps // 20)

    def log(step: int, loss: float, acc: float) -> None:
        if step % every == 0 or step == args.steps:
            print(f"step {step}/{args.steps}: loss {loss:.4f}, batch accuracy {acc:.2f}", flush=True)

    from layerscope.models import load_model
    from layerscope.models.keras_zoo import save_weights
    from layerscope.training import head

    model = load_model(RECIPE_MODEL, args.weights, framework=args.framework, seed=args.seed, size=args.size)
    if args.framework == "keras":
        head.train_head_keras(model, images, labels, args.steps, args.batch_size, args.lr, args.seed, log)
        path = save_weights(model, out, args.overwrite)
    else:
        head.train_head_torch(model, images, labels, args.steps, args.batch_size, args.lr, args.seed, log)
        path = head.save_torch(model, out, args.overwrite)
    print(
        f"{_common.shown(path)}: the whole model's weights, head trained for {plural(args.steps, 'step')} "
        f"on {plural(len(labels), 'image')}"
    )
    return 0
