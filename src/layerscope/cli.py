"""The ``layerscope`` command: parse → call the library → print. No logic of its own.

Every error is one line on stderr and a non-zero exit code (2 for a wrong argument, 1 for
anything else, 130 when interrupted); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from layerscope import __version__
from layerscope.errors import LayerscopeError, UsageError

DEFAULT_MODEL = "demo"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {value}")
    return value


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; method and model choices come from the registries."""
    from layerscope import recipe as recipe_cli
    from layerscope.methods import list_methods
    from layerscope.models import list_models

    parser = argparse.ArgumentParser(
        prog="layerscope",
        description="See what every layer of a CNN looks at: class-activation maps at every "
        "layer in one forward and one backward pass, as an annotated animation.",
    )
    parser.add_argument("--version", action="version", version=f"layerscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tour = sub.add_parser(
        "tour",
        help="the layer-by-layer animation of one image (the main job)",
        description="Explain one image at every conv layer and write the annotated animation "
        "(one frame per layer, in forward order).",
    )
    tour.add_argument(
        "image", nargs="?", help="image file (default: a built-in sample: a shapes image for demo, a photo otherwise)"
    )
    _model_args(tour, list_models())
    tour.add_argument("--layers", help="comma-separated layer names or glob patterns (default: every conv layer)")
    tour.add_argument("--method", default="gradcam", choices=list_methods(), help="CAM method (default: gradcam)")
    tour.add_argument(
        "--guided-grads",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the notebook recipe's variant: average only gradients that are positive where the activation is "
        "positive (default: on for the recipe, --model vgg16-cifar10 --cifar10 N; off otherwise)",
    )
    _perturbation_args(tour)
    _render_args(tour, scale_help="normalise each layer's map on its own range, or all layers on one shared range")
    tour.add_argument("--duration", type=_positive_int, default=500, help="milliseconds per frame (default: 500)")
    tour.add_argument(
        "-o",
        "--output",
        default="grad_cam.gif",
        help="output file: .gif, .webp, .png (APNG) or .npz for the raw maps (default: grad_cam.gif)",
    )
    tour.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    recipe_cli.add_tour_options(tour)

    grid = sub.add_parser(
        "grid",
        help="a layers × methods grid of one image (rows: methods, columns: layers)",
        description="Explain one image with several methods at every conv layer and write one "
        "labelled PNG: a row per method, a column per layer.",
    )
    grid.add_argument("image", nargs="?", help="image file (default: a built-in sample image)")
    _model_args(grid, list_models())
    grid.add_argument("--layers", help="comma-separated layer names or glob patterns (default: every conv layer)")
    grid.add_argument(
        "--methods",
        default="gradcam,gradcam++,layercam",
        help=f"comma-separated CAM methods, one row each (default: gradcam,gradcam++,layercam; any of: "
        f"{', '.join(list_methods())})",
    )
    _perturbation_args(grid)
    _render_args(grid, scale_help="normalise each cell on its own range, or each method's row on one shared range")
    grid.add_argument("--cell", type=_positive_int, default=160, help="cell size in pixels (default: 160)")
    grid.add_argument("-o", "--output", default="grid.png", help="output image: .png (default: grid.png)")
    grid.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")

    layers = sub.add_parser("layers", help="list a built-in model's layers and their output shapes")
    _model_args(layers, list_models(), weights_default="random")  # shapes do not depend on weights
    layers.add_argument(
        "--size",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="PX",
        help="input size: one number (square) or height width (default: the model's own)",
    )
    layers.add_argument("--all", action="store_true", help="list every module, not only the conv layers")

    sub.add_parser("methods", help="list the CAM methods")
    recipe_cli.add_train_head_command(sub)
    return parser


def _perturbation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        help="perturbation methods (scorecam, ablationcam): perturbed copies per forward pass (default: 32)",
    )
    p.add_argument(
        "--top-k",
        type=_positive_int,
        help="perturbation methods: evaluate only the K channels of largest mean activation per layer "
        "(default: every channel)",
    )


def _perturbation_options(args: argparse.Namespace, methods: list[str]) -> dict[str, Any]:
    """``--batch-size`` / ``--top-k`` as method options; an error if no chosen method has them."""
    from layerscope.methods import get_method

    given = {k: v for k, v in (("batch_size", args.batch_size), ("top_k", args.top_k)) if v is not None}
    for key in given:
        if not any(key in get_method(m).options for m in methods):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} applies to perturbation methods only (scorecam, ablationcam)")
    return given


def _render_args(p: argparse.ArgumentParser, scale_help: str) -> None:
    """The target and drawing options that ``tour`` and ``grid`` share."""
    p.add_argument("--target", help="class to explain: index or name (default: the top-1 prediction)")
    p.add_argument("--colormap", default="jet", help="any matplotlib colormap (default: jet)")
    p.add_argument("--alpha", type=_alpha, default=0.5, help="heatmap opacity, 0..1 (default: 0.5)")
    p.add_argument("--scale", choices=["layer", "shared"], default="layer", help=scale_help)


def _model_args(p: argparse.ArgumentParser, models: list[str], weights_default: str | None = None) -> None:
    from layerscope.models import MODELS

    listing = "; ".join(f"{name}: {text}" for name, text in MODELS.items())
    p.add_argument("--model", default=DEFAULT_MODEL, choices=models, help=f"built-in model ({listing})")
    p.add_argument(
        "--weights",
        default=weights_default,
        help="default (the demo's shipped weights), imagenet (torchvision's published file, downloaded once "
        "and cached), random, or a path to a .pth state dict / .safetensors file "
        f"(default: {weights_default or 'default for demo, imagenet for the VGG16 models'})",
    )


def sample_image(model: str) -> Any:
    """The built-in sample for ``model``: a fresh shapes image for the demo model (never seen
    in training), else a photo that ships with matplotlib (Grace Hopper). Both offline."""
    if model == "demo":
        from layerscope.models import demo

        return demo.sample_image()[0]
    from matplotlib import cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def cmd_tour(args: argparse.Namespace) -> int:
    from layerscope import outputs
    from layerscope import recipe as recipe_cli
    from layerscope.explanation import explain

    outputs.check_writable(args.output, args.overwrite)
    model, image, is_recipe, note = recipe_cli.tour_setup(args, lambda: sample_image(args.model))
    options: dict[str, Any] = {}
    if args.guided_grads is None:  # the recipe's own variant, unless told otherwise
        args.guided_grads = is_recipe and args.method == "gradcam"
    if args.guided_grads:
        if args.method != "gradcam":
            raise UsageError("--guided-grads applies to --method gradcam only")
        options["guided_grads"] = True
    options.update(_perturbation_options(args, [args.method]))
    exp = explain(model, image, layers=args.layers, method=args.method, target=args.target, **options)
    path = exp.save(
        args.output,
        overwrite=args.overwrite,
        duration=args.duration,
        colormap=args.colormap,
        alpha=args.alpha,
        scale=args.scale,
        caption=args.caption or ("recipe" if is_recipe else "layerscope"),
    )
    flat = [name for name in exp.layers if exp.flat[name][0]]
    print(
        f"{path}: {len(exp.layers)} layers, {exp.method}, class {exp.class_name(0)!r} "
        f"(index {int(exp.targets[0])}, p = {exp.probabilities[0]:.3f})" + (f"; {note}" if note else "")
    )
    if flat:
        print(f"flat maps (nothing to show) at: {', '.join(flat)}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from layerscope import outputs
    from layerscope.comparison import _method_list, grid
    from layerscope.models import load_model

    path = Path(args.output)
    if path.suffix.lower() != ".png":
        raise UsageError(f"{path}: the grid is written as .png, not {path.suffix or '(no extension)'}")
    outputs.check_writable(path, args.overwrite)
    methods = _method_list(args.methods)
    options = _perturbation_options(args, methods)
    image = args.image or sample_image(args.model)
    model = load_model(args.model, weights=args.weights)
    img = grid(
        model,
        image,
        methods,
        layers=args.layers,
        target=args.target,
        colormap=args.colormap,
        alpha=args.alpha,
        scale=args.scale,
        cell=args.cell,
        **options,
    )
    outputs.write_with(path, lambda f: img.save(f, format="PNG"), args.overwrite)
    print(f"{path}: {len(methods)} methods × layers grid, {img.width}×{img.height} px")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from layerscope.models import load_model
    from layerscope.summary import layer_table

    model = load_model(args.model, weights=args.weights)
    size = args.size
    if size is not None:
        if len(size) > 2:
            raise UsageError("--size takes one number (square) or two (height width)")
        size = (size[0], size[-1])
    for row in layer_table(model, size=size, every_module=args.all):
        print(row)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from layerscope.methods import get_method, list_methods

    for name in list_methods():
        m = get_method(name)
        grads = "gradients" if m.needs_gradients or m.kind == "pixel" else "no gradients"
        torch_only = "" if "keras" in m.frameworks else ", PyTorch only"
        print(f"{name:20s} {m.summary} [{m.cost}; {grads}{torch_only}]")
    return 0


def _one_line_warnings() -> None:
    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"layerscope: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _log_to_stderr() -> None:
    """Show layerscope's progress messages (e.g. a perturbation method's cost) on stderr."""
    import logging

    class ToStderr(logging.Handler):  # the current sys.stderr at each message
        def emit(self, record: logging.LogRecord) -> None:
            print(f"layerscope: {record.getMessage()}", file=sys.stderr)

    logger = logging.getLogger("layerscope")
    if not any(type(h).__name__ == "ToStderr" for h in logger.handlers):
        logger.addHandler(ToStderr())
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _one_line_warnings()
    from layerscope.recipe import cmd_train_head

    commands = {
        "tour": cmd_tour,
        "grid": cmd_grid,
        "layers": cmd_layers,
        "methods": cmd_methods,
        "train-head": cmd_train_head,
    }
    _log_to_stderr()
    try:
        return commands[args.command](args)
    except LayerscopeError as e:
        if args.debug:
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # one line, whatever the message
        print(f"layerscope: error: {'; '.join(lines)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("layerscope: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, with the way to see more
        if args.debug:
            raise
        print(f"layerscope: internal error: {type(e).__name__}: {e} (rerun with --debug for details)", file=sys.stderr)
        return 1
