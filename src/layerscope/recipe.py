"""The notebook recipe end to end, for PyTorch and Keras: model, CIFAR-10 image, settings,
and training the recipe's classification head.

The recipe: VGG16 (ImageNet, no top) + GlobalAveragePooling + Dense(1024, relu) +
Dense(10, softmax); one CIFAR-10 image resized to 224×224 and VGG-preprocessed; Grad-CAM
with guided gradients at the 13 conv layers; JET over the image; the recipe's captions
``Layer: <name>, Output size: <shape>``; a 500 ms GIF looping forever, ``grad_cam.gif``.

From Python::

    from layerscope import recipe
    exp = recipe.explain_cifar10(0, framework="keras", weights="vgg16_notop.h5")
    exp.save("grad_cam.gif", caption="recipe")

The command line (``layerscope tour --framework keras --model vgg16-cifar10 --cifar10 0``
and ``layerscope train-head``) is wired here so that ``cli.py`` stays a thin parser.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError

#: The recipe's settings, applied when the recipe's model explains a CIFAR-10 image.
SETTINGS = {"method": "gradcam", "guided_grads": True, "colormap": "jet", "caption": "recipe", "duration": 500}
RECIPE_MODEL = "vgg16-cifar10"
FRAMEWORKS = ("torch", "keras")


def load(
    name: str = RECIPE_MODEL,
    framework: str = "torch",
    weights: str | os.PathLike[str] | None = None,
    trust_model: bool = False,
) -> Any:
    """``layerscope.load_model(name, weights, framework=framework, trust_model=trust_model)``
    (kept until this module is removed)."""
    from layerscope.models import load_model

    return load_model(name, weights, framework=framework, trust_model=trust_model)


def explain_cifar10(
    index: int = 0,
    framework: str = "keras",
    weights: str | os.PathLike[str] | None = None,
    split: str = "test",
    cifar10_path: str | os.PathLike[str] | None = None,
    model: Any = None,
    **options: Any,
) -> Any:
    """The recipe: explain CIFAR-10 image ``index`` with the recipe's model and settings.

    Returns an :class:`~layerscope.Explanation`; save it with ``caption="recipe"`` for the
    recipe's frames. ``options`` override the recipe's method options.
    """
    from layerscope.datasets.cifar10 import load_image
    from layerscope.explanation import explain

    image, _, _ = load_image(index, split, cifar10_path)
    if model is None:
        model = load(RECIPE_MODEL, framework, weights)
    opts = {"guided_grads": SETTINGS["guided_grads"], **options}
    return explain(model, image, method=SETTINGS["method"], **opts)


# --------------------------------------------------------------------------- training the head


def train_head_torch(*args: Any, **kwargs: Any) -> list[float]:
    """:func:`layerscope.training.head.train_head_torch` (kept until this module is removed)."""
    from layerscope.training.head import train_head_torch as train

    return train(*args, **kwargs)


def save_torch(model: Any, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """:func:`layerscope.training.head.save_torch` (kept until this module is removed)."""
    from layerscope.training.head import save_torch as save

    return save(model, path, overwrite)


# --------------------------------------------------------------------------- command line


def add_tour_options(p: argparse.ArgumentParser) -> None:
    """``tour``'s options for the recipe: framework, CIFAR-10 image, caption style, trust."""
    p.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        default="torch",
        help="the built-in model's framework: torch (default) or keras (Keras 3, any backend; "
        "--model may then also be a .keras file)",
    )
    p.add_argument(
        "--cifar10",
        type=_index,
        metavar="N",
        help="explain CIFAR-10 image N of --split (instead of an image file); with --model vgg16-cifar10 this "
        "is the notebook recipe: guided gradients and the recipe's captions unless told otherwise",
    )
    p.add_argument(
        "--cifar10-path",
        metavar="PATH",
        help="a local cifar-10-python.tar.gz or its extracted cifar-10-batches-py folder "
        "(default: Keras' or layerscope's cache, else a download)",
    )
    p.add_argument("--split", choices=["test", "train"], default="test", help="CIFAR-10 split (default: test)")
    p.add_argument(
        "--caption",
        choices=["layerscope", "recipe"],
        help="caption style: layerscope's two lines, or the recipe's 'Layer: <name>, Output size: <shape>' "
        "(default: recipe for the recipe, else layerscope)",
    )
    p.add_argument(
        "--model-file",
        metavar="PATH",
        help="a Keras .keras model file to explain instead of a built-in model (with --framework keras); "
        "it loads with Keras' safe mode",
    )
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="allow a .keras model file with Lambda layers (they run arbitrary Python code)",
    )


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image index (0, 1, …), not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an image index of 0 or more, not {value}")
    return value


def tour_setup(args: argparse.Namespace, default_image: Any) -> tuple[Any, Any, bool, str]:
    """``(model, image, is_recipe, note)`` for ``tour``: the model of ``--framework``, the
    image file or CIFAR-10 image, and whether the recipe's settings apply."""
    if args.cifar10 is not None and args.image:
        raise UsageError("give an image file or --cifar10 N, not both")
    if args.cifar10_path and args.cifar10 is None:
        raise UsageError("--cifar10-path needs --cifar10 N (the image to explain)")
    note = ""
    if args.cifar10 is not None:
        from layerscope.datasets.cifar10 import load_image

        image, _, name = load_image(args.cifar10, args.split, args.cifar10_path)
        note = f"CIFAR-10 {args.split} image {args.cifar10}, labelled {name!r}"
    else:
        image = args.image or default_image()
    if args.model_file:
        if args.framework != "keras":
            raise UsageError("--model-file takes a Keras .keras file: add --framework keras")
        model = load(args.model_file, "keras", None, args.trust_model)
    else:
        model = load(args.model, args.framework, args.weights, args.trust_model)
    recipe = args.model == RECIPE_MODEL and args.cifar10 is not None and not args.model_file
    return model, image, recipe, note


def add_train_head_command(sub: Any) -> None:
    """The ``train-head`` subcommand."""
    from layerscope.cli import _positive_int

    p = sub.add_parser(
        "train-head",
        help="train the recipe's CIFAR-10 head (VGG16 base frozen) and save the whole model's weights",
        description="Train vgg16-cifar10's classification head (Dense 1024 → Dense 10) on CIFAR-10 features of the "
        "frozen VGG16 base, then save the model's weights (Keras: .weights.h5, torch: .safetensors) for "
        "`layerscope tour --model vgg16-cifar10 --weights PATH`.",
    )
    p.add_argument("--framework", choices=FRAMEWORKS, default="keras", help="keras (default) or torch")
    p.add_argument(
        "--weights",
        default=None,
        help="the base: imagenet (default; Keras' or torchvision's published file), random, or a local weights file",
    )
    p.add_argument("--cifar10-path", metavar="PATH", help="a local cifar-10-python.tar.gz or its extracted folder")
    p.add_argument("--steps", type=_positive_int, default=200, help="optimisation steps (default: 200)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per step (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    p.add_argument("--size", type=_positive_int, default=224, help="input size in pixels (default: 224, as the recipe)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order and the head's initial weights")
    p.add_argument("--limit", type=_positive_int, help="use only the first N training images")
    p.add_argument(
        "-o",
        "--output",
        help="output file (default: vgg16-cifar10.weights.h5 for Keras, vgg16-cifar10.safetensors for torch)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def cmd_train_head(args: argparse.Namespace) -> int:
    """Train the recipe's head and save the weights; prints the loss as it goes."""
    from layerscope import outputs
    from layerscope.datasets.cifar10 import load_split

    out = args.output or ("vgg16-cifar10.weights.h5" if args.framework == "keras" else "vgg16-cifar10.safetensors")
    outputs.check_writable(out, args.overwrite)
    images, labels = load_split("train", args.cifar10_path, limit=args.limit)
    every = max(1, args.steps // 20)

    def log(step: int, loss: float, acc: float) -> None:
        if step % every == 0 or step == args.steps:
            print(f"step {step}/{args.steps}: loss {loss:.4f}, batch accuracy {acc:.2f}", flush=True)

    from layerscope.models import load_model
    from layerscope.training import head

    model = load_model(RECIPE_MODEL, args.weights, framework=args.framework, seed=args.seed, size=args.size)
    if args.framework == "keras":
        from layerscope.models import keras_zoo

        head.train_head_keras(model, images, labels, args.steps, args.batch_size, args.lr, args.seed, log)
        path = keras_zoo.save_weights(model, out, args.overwrite)
    else:
        head.train_head_torch(model, images, labels, args.steps, args.batch_size, args.lr, args.seed, log)
        path = head.save_torch(model, out, args.overwrite)
    print(f"{path}: the whole model's weights, head trained for {args.steps} steps on {len(labels)} images")
    return 0
