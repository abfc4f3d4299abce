"""``layerscope tour``: the layer-by-layer animation of one image (the main job)."""

from __future__ import annotations

import argparse
from typing import Any

from layerscope.cli import _common
from layerscope.errors import UsageError, plural
from layerscope.recipe import RECIPE_MODEL


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tour",
        help="the layer-by-layer animation of one image (the main job)",
        description="Explain one image at every conv layer and write the annotated animation (one frame per "
        "layer, in forward order), a video, an interactive page or the raw maps.",
    )
    p.add_argument(
        "image", nargs="?", help="image file (default: a built-in sample: a shapes image for demo, a photo otherwise)"
    )
    _common.add_model_args(p, model_output=True)
    _common.add_method_args(p)
    p.add_argument(
        "--methods",
        metavar="A,B,…",
        help="several CAM methods for the interactive page's method switch (.html output only; instead of --method)",
    )
    p.add_argument(
        "--top-k-classes",
        type=_common.positive_int,
        metavar="K",
        help="explain the K most probable classes, for the page's class switch (.html output only); "
        "--target also takes a comma-separated list of classes",
    )
    _common.add_render_args(p)
    _common.add_frame_args(p)
    p.add_argument(
        "--duration", type=_common.positive_int, default=500, help="milliseconds per frame, 10 or more (default: 500)"
    )
    p.add_argument(
        "--caption",
        choices=["layerscope", "recipe"],
        help="caption style: layerscope's two lines, or the recipe's 'Layer: <name>, Output size: <shape>' "
        "(default: recipe for the recipe, else layerscope)",
    )
    p.add_argument(
        "--cifar10",
        type=_common.index,
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
    _common.add_device_args(p)
    from layerscope.outputs import WRITERS

    formats = "; ".join(f"{ext}: {w.name}" for ext, w in WRITERS.items())
    _common.add_output_args(
        p, "grad_cam.gif", f"output file, its format chosen by extension ({formats}) (default: grad_cam.gif)"
    )


def run(args: argparse.Namespace) -> int:
    from layerscope import outputs
    from layerscope.explanation import explain
    from layerscope.inputs import load_image
    from layerscope.methods import get_method

    # Everything that can be checked is checked before the model is loaded.
    if args.cifar10 is not None and args.image:
        raise UsageError("give an image file or --cifar10 N, not both")
    if args.cifar10_path and args.cifar10 is None:
        raise UsageError("--cifar10-path needs --cifar10 N (the image to explain)")
    if args.model_file and args.framework != "keras":
        raise UsageError("--model-file takes a Keras .keras file: add --framework keras")
    _common.check_model_args(args)
    name = _common.model_name(args)
    is_recipe = name == RECIPE_MODEL and args.cifar10 is not None and not args.model_file
    options = _common.render_options(args, caption=args.caption or ("recipe" if is_recipe else "layerscope"))
    outputs.check_path(args.output, options, args.overwrite)
    methods = _common.csv_list(args.methods) if args.methods else [args.method]
    for m in methods:
        get_method(m)
    targets = _common.csv_list(args.target) if args.target and "," in args.target else None
    several = len(methods) > 1 or targets is not None or (args.top_k_classes or 1) > 1
    if args.methods and args.method != "gradcam":
        raise UsageError("give --method or --methods, not both")
    if targets is not None and args.top_k_classes:
        raise UsageError("give --target classes or --top-k-classes, not both")
    if several and not args.output.lower().endswith((".html", ".htm")):
        raise UsageError(
            "several methods or classes are shown by the interactive page: write -o NAME.html "
            "(or compare methods in one picture with `layerscope grid`)"
        )
    method_options = _common.method_options(args, methods, recipe=is_recipe)
    note = ""
    if args.cifar10 is not None:
        from layerscope.datasets.cifar10 import load_image as load_cifar10

        image, _, label = load_cifar10(args.cifar10, args.split, args.cifar10_path)
        note = f"CIFAR-10 {args.split} image {args.cifar10}, labelled {label!r}"
    elif args.image:
        image = load_image(args.image)
        if args.model is None and not args.model_file:
            note = (
                "the demo model knows only 10 synthetic shapes; for a photo use e.g. --model vgg16 --weights imagenet"
            )
    else:
        image = _common.sample_image(name)

    model = _common.load_model_from_args(args)
    extra: dict[str, Any] = {"device": args.device, "precision": args.precision, "output": args.model_output}
    if several:
        from layerscope.grid import explain_many

        exps = explain_many(
            model,
            image,
            methods,
            targets,
            top_k_classes=args.top_k_classes,
            layers=args.layers,
            **method_options,
            **extra,
        )
        path = outputs.write_html(exps, args.output, options, overwrite=args.overwrite)
        classes = list(dict.fromkeys(e.class_name(0) for e in exps))
        print(
            f"{_common.shown(path)}: {plural(len(exps[0].layers), 'layer')}, "
            f"{plural(len(methods), 'method')} ({', '.join(methods)}) × "
            f"{plural(len(classes), 'class', 'classes')} ({', '.join(map(repr, classes))})"
            + (f"; {note}" if note else "")
        )
        return 0
    exp = explain(model, image, layers=args.layers, method=args.method, target=args.target, **method_options, **extra)
    saved = exp.save(args.output, overwrite=args.overwrite, options=options)
    path = saved[0] if isinstance(saved, list) else saved
    flat = [layer for layer in exp.layers if exp.flat[layer][0] and layer not in exp.blocked]
    print(
        f"{_common.shown(path)}: {plural(len(exp.layers), 'layer')}, {exp.method}, class {exp.class_name(0)!r} "
        f"(index {int(exp.targets[0])}, p = {exp.probabilities[0]:.3f})" + (f"; {note}" if note else "")
    )
    if flat:
        print(f"flat maps (nothing to show) at: {_common.shown(', '.join(flat))}")
    for layer in exp.blocked:
        print(f"flat map at {_common.shown(layer)}: {exp.flat_reason(layer)}")
    return 0
