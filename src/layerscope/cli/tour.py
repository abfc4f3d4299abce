"""``layerscope tour``: the layer-by-layer animation of one image (the main job)."""

from __future__ import annotations

import argparse
from typing import Any

from layerscope.cli import _common, _targets
from layerscope.errors import UsageError, plural
from layerscope.evaluate import DEFAULT_RANK_METRIC
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
    p.add_argument(
        "--target-text",
        action="append",
        metavar="PROMPT",
        help="explain a CLIP model's image–text similarity for this prompt (--model hf:CLIP_FOLDER_OR_ID); "
        "repeat it for several prompts, one explanation each on the interactive page (-o NAME.html)",
    )
    from layerscope.methods import list_fusions

    p.add_argument(
        "--fuse",
        metavar="NAME",
        help="append a last frame 'fused': one map fused from the layers' maps at no extra pass "
        f"({', '.join(list_fusions())}; see `layerscope methods`)",
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
    from layerscope.evaluate import rank_metrics

    p.add_argument(
        "--rank-layers",
        action="store_true",
        help="which layer should I look at? score every layer's map with a cheap faithfulness metric (ROAD at "
        "10/30/50 %% on the class's logit: 6 forward passes per layer), print the layers best first and mark the "
        "best one ★ in its frame and on the page (PyTorch models)",
    )
    p.add_argument(
        "--rank-metric",
        choices=rank_metrics(),
        default=DEFAULT_RANK_METRIC,
        help=f"the metric --rank-layers ranks by (default: {DEFAULT_RANK_METRIC})",
    )
    from layerscope.outputs import WRITERS

    formats = "; ".join(f"{ext}: {w.name}" for ext, w in WRITERS.items())
    _common.add_output_args(
        p, "grad_cam.gif", f"output file, its format chosen by extension ({formats}) (default: grad_cam.gif)"
    )


def run(args: argparse.Namespace) -> int:
    from layerscope import outputs
    from layerscope.explanation import explain
    from layerscope.inputs import load_image
    from layerscope.methods import get_fusion, get_method

    # Everything that can be checked is checked before the model is loaded.
    if args.cifar10 is not None and args.image:
        raise UsageError("give an image file or --cifar10 N, not both")
    if args.cifar10_path and args.cifar10 is None:
        raise UsageError("--cifar10-path needs --cifar10 N (the image to explain)")
    if args.model_file and args.framework != "keras":
        raise UsageError("--model-file takes a Keras .keras file: add --framework keras")
    _common.check_model_args(args, boxes=True)
    detector = _targets.detector_target(args.target)  # box:… / top-detections:K, checked now
    name = _common.model_name(args)
    is_recipe = name == RECIPE_MODEL and args.cifar10 is not None and not args.model_file
    options = _common.render_options(args, caption=args.caption or ("recipe" if is_recipe else "layerscope"))
    outputs.check_path(args.output, options, args.overwrite)
    methods = _common.csv_list(args.methods) if args.methods else [args.method]
    for m in methods:
        get_method(m)
    if args.fuse is not None:
        get_fusion(args.fuse)
    targets = _common.csv_list(args.target) if args.target and "," in args.target and detector is None else None
    prompts = _check_prompts(args, name, methods)
    for m in methods if detector is not None else ():
        if get_method(m).needs & {"perturbation", "saliency", "attention"}:
            raise UsageError(f"a box or top-detections target works with the Grad-CAM family and Eigen-CAM, not {m}")
    if detector is not None and args.top_k_classes:
        raise UsageError("give --target box:…/top-detections:K or --top-k-classes, not both")
    several = len(methods) > 1 or targets is not None or (args.top_k_classes or 1) > 1 or len(prompts) > 1
    several = several or len(getattr(detector, "labels", ())) > 1
    if args.methods and args.method != "gradcam":
        raise UsageError("give --method or --methods, not both")
    if targets is not None and args.top_k_classes:
        raise UsageError("give --target classes or --top-k-classes, not both")
    if several and not args.output.lower().endswith((".html", ".htm")):
        raise UsageError(
            "several methods, classes, prompts or detections are shown by the interactive page: write -o NAME.html "
            "(or compare methods in one picture with `layerscope grid`)"
        )
    _check_rank(args, several, prompts)
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
    target: Any = args.target
    if prompts:
        from layerscope.targets import is_dual_encoder, text

        if not is_dual_encoder(model):
            raise UsageError(f"--target-text needs a CLIP model (image and text towers); {name} is not one")
        target = targets = text(prompts, model=model)
    if detector is not None:
        target = detector
        targets = detector if several else None
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
        for e in exps if args.fuse is not None else ():
            e.fused(args.fuse)
        path = outputs.write_html(exps, args.output, options, overwrite=args.overwrite)
        classes = list(dict.fromkeys(e.class_name(0) for e in exps))
        kind = plural(len(classes), "prompt") if prompts else plural(len(classes), "class", "classes")
        if detector is not None:
            kind, prompts = plural(len(classes), "detection"), True  # named as they are, not quoted
        print(
            f"{_common.shown(path)}: {plural(len(exps[0].layers), 'layer')}, "
            f"{plural(len(methods), 'method')} ({', '.join(methods)}) × "
            f"{kind} ({', '.join(classes if prompts else map(repr, classes))})" + (f"; {note}" if note else "")
        )
        return 0
    if args.rank_layers:
        from layerscope.capture.torch import resolve_device

        model = model.to(resolve_device(args.device))  # the ranking re-runs it where it is
    exp = explain(
        model, image, layers=args.layers, method=args.method, target=target, fuse=args.fuse, **method_options, **extra
    )
    ranking = None
    if args.rank_layers:
        from layerscope.evaluate import rank_layers

        ranking = rank_layers(model, exp, image, args.rank_metric, progress=True)
        exp = ranking.mark(exp)
    saved = exp.save(args.output, overwrite=args.overwrite, options=options)
    path = saved[0] if isinstance(saved, list) else saved
    flat = [layer for layer in exp.layers if exp.flat[layer][0] and layer not in exp.blocked]
    what = (
        f"box {exp.class_name(0)} (p = {exp.probabilities[0]:.3f}, score {exp.scores[0]:.3f})"
        if detector is not None
        else f"text {exp.class_name(0)} (logit {exp.scores[0]:.3f})"
        if prompts
        else f"class {exp.class_name(0)!r} (index {int(exp.targets[0])}, p = {exp.probabilities[0]:.3f})"
    )
    print(
        f"{_common.shown(path)}: {plural(len(exp.layers), 'layer')}, {exp.method}, {what}"
        + (f"; f{exp.fusion.caption[1:]}" if exp.fusion is not None else "")
        + (f"; {note}" if note else "")
    )
    if flat:
        print(f"flat maps (nothing to show) at: {_common.shown(', '.join(flat))}")
    for layer in exp.blocked:
        print(f"flat map at {_common.shown(layer)}: {exp.flat_reason(layer)}")
    if ranking is not None:
        print(_common.shown(ranking.table(0), newlines=True), end="")
    return 0


def _check_rank(args: argparse.Namespace, several: bool, prompts: list[str]) -> None:
    """``--rank-layers`` checked before anything is loaded: one explanation of a PyTorch
    classifier's class (the metric re-runs the model on perturbed copies of the image)."""
    if not args.rank_layers:
        if args.rank_metric != DEFAULT_RANK_METRIC:
            raise UsageError("--rank-metric applies to --rank-layers only")
        return
    if args.framework == "keras" or args.model_file:
        raise UsageError(
            "--rank-layers re-runs the model on perturbed copies of the image: PyTorch models only (built-in, "
            "--weights FILE, hf:, timm:, torchvision:), not Keras models"
        )
    if prompts:
        raise UsageError("--rank-layers ranks by a class's score, not by a CLIP prompt's similarity (--target-text)")
    if several:
        raise UsageError(
            "--rank-layers ranks the layers of one explanation: not with --methods, several --target classes or "
            "--top-k-classes"
        )


def _check_prompts(args: argparse.Namespace, name: str, methods: list[str]) -> list[str]:
    """``--target-text`` checked before anything is loaded: non-empty prompts, not with
    ``--target`` or ``--top-k-classes``, gradient methods, a CLIP model (from its config);
    a CLIP model without a prompt is an error too."""
    from layerscope.methods import get_method

    prompts = list(args.target_text or [])
    hf = name.startswith("hf:") and not args.model_file
    if not prompts:
        if hf and _dual_encoder(name[3:]):
            raise UsageError(
                f"{name} is a CLIP model (image and text towers): say what to explain with --target-text PROMPT"
            )
        return prompts
    if any(not p.strip() for p in prompts):
        raise UsageError("--target-text: a prompt is empty; give the words to explain, e.g. --target-text 'a cat'")
    if args.target is not None or args.top_k_classes:
        raise UsageError("give --target-text or --target / --top-k-classes, not both")
    for m in methods:
        if get_method(m).needs & {"perturbation", "saliency", "layer_scores"}:
            raise UsageError(
                f"--target-text works with the gradient methods (Grad-CAM family), gradrollout and rollout, not {m}"
            )
    known = _dual_encoder(name[3:]) if hf else None
    if known is False or (not hf and ":" not in name) or args.model_file or args.framework == "keras":
        raise UsageError(
            f"--target-text explains a CLIP model's image–text similarity; {args.model_file or name} is not a CLIP "
            "model: give --model hf:FOLDER (written by save_pretrained) or a Hub CLIP id "
            "(e.g. hf:openai/clip-vit-base-patch32)"
        )
    return prompts


def _dual_encoder(repo: str) -> bool | None:
    from layerscope.models.hf import is_dual_encoder

    return is_dual_encoder(repo)
