"""What the subcommands share: argument types, option groups, model loading from the
arguments, the render options, and the command session (warnings, logging, socket timeout
set for one command and restored after it)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from layerscope.errors import UsageError, unknown_name

DEFAULT_MODEL = "demo"
#: Seconds a download may stall before it fails (set for a command, restored after it).
SOCKET_TIMEOUT = 30.0
#: The largest ``--size`` side without ``--allow-large-size``: a 4096² input already needs
#: gigabytes of activations in a VGG16; 20000² would fail deep inside with a MemoryError.
MAX_INPUT_SIDE = 4096


# --------------------------------------------------------------------------- what is printed


def shown(value: object, *, newlines: bool = False) -> str:
    """Text with user-given names in it (a path, a layer) safe to print on a terminal:
    control characters and ANSI escapes as ``\\x1b``-style escapes, everything else as it is
    (``newlines``: line breaks kept)."""
    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    if newlines:
        return "\n".join(shown(line) for line in text.split("\n"))
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


# --------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """``argparse`` type: a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {value}")
    return value


def index(text: str) -> int:
    """``argparse`` type: an index ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an index (0, 1, …), not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an index of 0 or more, not {value}")
    return value


def unit_float(text: str) -> float:
    """``argparse`` type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {value}")
    return value


def size(values: Sequence[int] | None) -> tuple[int, int] | None:
    """``--size`` (one number: square; two: height width) as ``(height, width)``."""
    if values is None:
        return None
    if len(values) > 2:
        raise UsageError("--size takes one number (square) or two (height width)")
    return (values[0], values[-1])


def check_size(args: argparse.Namespace) -> None:
    """``--size`` at most :data:`MAX_INPUT_SIDE` per side unless ``--allow-large-size``;
    checked before any model is loaded."""
    wanted = size(getattr(args, "size", None))
    if wanted and max(wanted) > MAX_INPUT_SIDE and not getattr(args, "allow_large_size", False):
        raise UsageError(
            f"--size {max(wanted)} is more than {MAX_INPUT_SIDE} pixels per side: the activations of such an "
            "input need more memory than most machines have; pass --allow-large-size to try anyway"
        )


def csv_list(text: str | None) -> list[str]:
    """A comma-separated option as a list without blanks or repeats."""
    return list(dict.fromkeys(s.strip() for s in (text or "").split(",") if s.strip()))


# --------------------------------------------------------------------------- option groups


def add_model_args(p: argparse.ArgumentParser, weights_default: str | None = None, model_output: bool = False) -> None:
    """``--model``, ``--weights``, ``--framework``, ``--model-file``, ``--trust-model``, ``--size``
    (and ``--model-output`` where ``model_output``)."""
    from layerscope.models import MODELS

    listing = "; ".join(f"{name}: {text}" for name, text in MODELS.items())
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help=f"a built-in model ({listing}); or your own: module.path:callable (called with no arguments), "
        "torchvision:NAME, timm:NAME, hf:REPO_ID (those packages installed); default: demo",
    )
    p.add_argument(
        "--weights",
        default=weights_default,
        help="default (the demo's shipped weights), imagenet (the published file, downloaded once and cached), "
        "random, or a path to a .pth state dict / .safetensors file (Keras: .h5 / .weights.h5) "
        f"(default: {weights_default or 'default for demo, imagenet for the other built-in models'})",
    )
    p.add_argument(
        "--framework",
        choices=("torch", "keras"),
        default="torch",
        help="the built-in model's framework: torch (default) or keras (Keras 3, any backend)",
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
        help="allow code a model brings with it: a .keras file's Lambda layers, or an hf: model's own Python"
        " classes (config.json auto_map)",
    )
    p.add_argument(
        "--size",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="PX",
        help=f"model input size: one number (square) or height width (default: the model's own; at most "
        f"{MAX_INPUT_SIDE} unless --allow-large-size)",
    )
    p.add_argument(
        "--allow-large-size",
        action="store_true",
        help=f"allow --size above {MAX_INPUT_SIDE} pixels per side (memory grows with its square)",
    )
    p.add_argument(
        "--mean",
        type=float,
        nargs="+",
        metavar="M",
        help="per-channel input mean on the 0..1 scale, one number or R G B (default: the model's own, else ImageNet)",
    )
    p.add_argument(
        "--std",
        type=float,
        nargs="+",
        metavar="S",
        help="per-channel input std on the 0..1 scale, one number or R G B (default: the model's own, else ImageNet's)",
    )
    if model_output:
        p.add_argument(
            "--model-output",
            type=output_key,
            default=None,
            metavar="KEY",
            help="for a model returning a dict, tuple or ModelOutput: which output holds the class scores "
            "(a key, or an integer tuple index; default: logits, else the first tensor)",
        )


def output_key(text: str) -> str | int:
    """``--model-output``: an integer is a tuple index, anything else a key."""
    return int(text) if text.strip().lstrip("-").isdigit() else text


def add_method_args(p: argparse.ArgumentParser, several: bool = False) -> None:
    """``--layers``, ``--method`` (or ``--methods``), ``--guided-grads``, ``--perturb-batch``, ``--top-k``,
    ``--target``."""
    from layerscope.methods import list_methods

    p.add_argument(
        "--layers",
        help="comma-separated layer names or glob patterns (default: the model's default layers: a built-in "
        "model's named layers, a ResNet's blocks, a vision transformer's blocks, else every conv layer)",
    )
    if several:
        p.add_argument(
            "--methods",
            default="gradcam,gradcam++,layercam",
            help="comma-separated CAM methods (default: gradcam,gradcam++,layercam; any of: "
            f"{', '.join(list_methods())})",
        )
    else:
        p.add_argument(
            "--method",
            default="gradcam",
            metavar="NAME",
            help=f"CAM method: {', '.join(list_methods())} (default: gradcam)",
        )
    p.add_argument(
        "--guided-grads",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the notebook recipe's variant of Grad-CAM: average only gradients that are positive where the "
        "activation is positive (default: on for the recipe, --model vgg16-cifar10 --cifar10 N; off otherwise)",
    )
    p.add_argument(
        "--perturb-batch",
        type=positive_int,
        metavar="N",
        help="perturbation methods (scorecam, ablationcam): perturbed copies per forward pass (default: 32)",
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        help="perturbation methods: only the K channels of largest mean activation per layer (default: all)",
    )
    p.add_argument(
        "--target",
        help="class to explain: index or name (default: the top-1 prediction); for a detector "
        "(tour) box:x0,y0,x1,y1[:label] in model input pixels, or top-detections:K",
    )


def add_render_args(p: argparse.ArgumentParser, scale_help: str | None = None) -> None:
    """``--colormap``, ``--alpha``, ``--scale``."""
    p.add_argument("--colormap", default="jet", help="any matplotlib colormap (default: jet)")
    p.add_argument("--alpha", type=unit_float, default=0.5, help="heatmap opacity, 0..1 (default: 0.5)")
    p.add_argument(
        "--scale",
        choices=["layer", "shared"],
        default="layer",
        help=scale_help or "normalise each layer's map on its own range, or all layers on one shared range",
    )


def add_frame_args(p: argparse.ArgumentParser) -> None:
    """``--side-by-side``, ``--no-colorbar``, ``--no-counter``, ``--max-side`` (how frames look)."""
    p.add_argument("--side-by-side", action="store_true", help="draw the original image beside each overlay")
    p.add_argument(
        "--no-colorbar", dest="colorbar", action="store_false", help="leave out the colour bar with the scale's range"
    )
    p.add_argument("--no-counter", dest="counter", action="store_false", help="leave out the layer counter (3/13)")
    p.add_argument(
        "--max-side",
        type=positive_int,
        metavar="PX",
        help="the longest side a frame's picture is drawn at; larger photos are shrunk (default: 2048)",
    )


def add_output_args(p: argparse.ArgumentParser, default: str, help_text: str) -> None:
    """``-o/--output`` and ``--overwrite``."""
    p.add_argument("-o", "--output", default=default, help=help_text)
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``."""
    p.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (CUDA when available), cpu, cuda, cuda:N or mps (default: auto)",
    )
    p.add_argument(
        "--precision",
        choices=("default", "highest", "fast"),
        default="default",
        help="default: torch's own settings (TF32 on CUDA); highest: full fp32, GPU maps agree with CPU maps; "
        "fast: fp16 autocast + channels_last (see the README for the measured speed and fidelity)",
    )


# --------------------------------------------------------------------------- from arguments


def method_options(args: argparse.Namespace, methods: Sequence[str], recipe: bool = False) -> dict[str, Any]:
    """The method options the arguments give (``--guided-grads``, ``--perturb-batch``, ``--top-k``); an
    option no chosen method has is an error."""
    from layerscope.methods import get_method

    chosen = [get_method(m) for m in methods]
    options: dict[str, Any] = {}
    guided = getattr(args, "guided_grads", None)
    if guided is None:
        guided = recipe and any(m.name == "gradcam" for m in chosen)
    if guided:
        if not any("guided_grads" in m.options for m in chosen):
            raise UsageError("--guided-grads applies to --method gradcam only")
        options["guided_grads"] = True
    for key in ("perturb_batch", "top_k"):
        value = getattr(args, key, None)
        if value is None:
            continue
        if not any(key in m.options for m in chosen):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} applies to perturbation methods only (scorecam, ablationcam)")
        options[key] = value
    return options


def render_options(args: argparse.Namespace, **overrides: Any) -> Any:
    """A validated :class:`~layerscope.render.options.RenderOptions` from the arguments."""
    from layerscope.render.options import RenderOptions

    fields = {}
    for name in (
        "colormap",
        "alpha",
        "scale",
        "caption",
        "duration",
        "cell",
        "side_by_side",
        "colorbar",
        "counter",
        "max_side",
    ):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    fields.update(overrides)
    return RenderOptions(**fields)


def model_name(args: argparse.Namespace) -> str:
    """``--model``, or the default (the demo model)."""
    return args.model or DEFAULT_MODEL


def check_model_name(args: argparse.Namespace) -> None:
    """An unknown built-in model name is an error before anything is loaded."""
    from layerscope.models import MODELS

    name = model_name(args)
    if getattr(args, "model_file", None) or ":" in name or name in MODELS:
        return
    raise UsageError(unknown_name("model", name, MODELS, cutoff=0.4, n=3, valid="Built-in models"))


def check_target(args: argparse.Namespace, boxes: bool = False) -> None:
    """``--target`` checked against a built-in model's class names before the model is loaded
    (a name not known, an index out of range)."""
    target = getattr(args, "target", None)
    if str(target).lower().startswith(("box:", "top-detections:")):  # a detector's: cli._targets checks it
        if not boxes:
            raise UsageError(f"--target {target}: box and top-detections targets are for `layerscope tour`")
        return
    if not target or getattr(args, "model_file", None):
        return
    from layerscope.explanation import resolve_target
    from layerscope.models import ENTRIES

    entry = ENTRIES.get(model_name(args))
    if entry is None:
        return
    names = entry.info().class_names
    if not names:
        return
    for t in csv_list(target):
        index = resolve_target(t, names)
        if isinstance(index, str) and index.lstrip("-").isdigit():
            index = int(index)
        if isinstance(index, int) and not 0 <= index < len(names):
            raise UsageError(f"class index {index} is out of range for {entry.name}'s {len(names)} classes")


def load_model_from_args(args: argparse.Namespace, listing: bool = False) -> Any:
    """The model the arguments name (``--model``/``--model-file``, ``--weights``, ``--framework``,
    ``--size``, ``--mean``/``--std``), its :class:`~layerscope.info.ModelInfo` recorded.
    ``listing``: the architecture only, no weights read (for ``layerscope layers``)."""
    from layerscope.models import build_for_listing, load_model

    if getattr(args, "model_file", None):
        if args.framework != "keras":
            raise UsageError("--model-file takes a Keras .keras file: add --framework keras")
        name = args.model_file
    else:
        name = model_name(args)
    check_size(args)
    wanted = size(getattr(args, "size", None))
    if listing:
        return build_for_listing(
            name, framework=args.framework, size=wanted, trust_model=getattr(args, "trust_model", False)
        )
    return load_model(
        name,
        args.weights,
        framework=args.framework,
        trust_model=getattr(args, "trust_model", False),
        size=wanted,
        mean=_floats(getattr(args, "mean", None), "--mean"),
        std=_floats(getattr(args, "std", None), "--std"),
    )


def check_model_args(args: argparse.Namespace, *, classes: bool = True, boxes: bool = False) -> None:
    """The model arguments that need no model: the name, ``--target`` (unless not
    ``classes``: batch's targets include ``label``), ``--size`` (capped), ``--mean`` /
    ``--std`` (finite; std > 0); ``boxes``: ``--target`` may name a detector's box. Every
    command calls it before loading a model."""
    check_model_name(args)
    if classes:
        check_target(args, boxes)
    check_size(args)
    _floats(getattr(args, "mean", None), "--mean")
    _floats(getattr(args, "std", None), "--std")


def _floats(values: Sequence[float] | None, flag: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise UsageError(f"{flag} takes one number (all channels) or three (R G B), not {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} values must be finite numbers, not {' '.join(map(str, values))}")
    if flag == "--std" and any(v <= 0 for v in values):
        raise UsageError(f"{flag} values must be positive, not {' '.join(map(str, values))}")
    return tuple(float(v) for v in values) * (3 if len(values) == 1 else 1)


def sample_image(model: str) -> Any:
    """The built-in sample for ``model``: a fresh shapes image for the demo models, a fresh
    3-object scene for the demo detector (never seen in training), else a photo that ships
    with matplotlib (Grace Hopper). All offline."""
    if model in ("demo", "demo-vit"):
        from layerscope.models import demo

        return demo.sample_image()[0]
    if model == "demo-detector":
        from layerscope.models import demo_detector

        return demo_detector.sample_image()[0]
    from matplotlib import cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


# --------------------------------------------------------------------------- the command session


class _ToStderr(logging.Handler):
    """layerscope's progress messages as ``layerscope: …`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"layerscope: {shown(record.getMessage(), newlines=True)}", file=sys.stderr)


@contextlib.contextmanager
def command_session() -> Iterator[None]:
    """Process-wide settings for one command, restored when it ends: warnings shown as one
    ``layerscope: warning: …`` line, layerscope's log on stderr, a socket timeout for
    downloads. The library itself never changes any of them."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"layerscope: warning: {shown(message, newlines=True)}", file=sys.stderr)

    logger = logging.getLogger("layerscope")
    handler = _ToStderr()
    # TensorFlow's C++ start-up lines (absl, CPU features) would come before our one-line
    # messages: quiet them for the command unless the user chose a level.
    tf_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if tf_level is None and "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    old_level, old_propagate = logger.level, logger.propagate
    old_timeout = socket.getdefaulttimeout()
    with warnings.catch_warnings():
        warnings.showwarning = show
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        socket.setdefaulttimeout(SOCKET_TIMEOUT)
        try:
            yield
        finally:
            if tf_level is None:
                os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
            socket.setdefaulttimeout(old_timeout)
