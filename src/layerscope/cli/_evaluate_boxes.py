"""``layerscope evaluate --scenes N | --boxes JSON``: the box metrics of a detector, each
ground-truth box its detection's item (:mod:`layerscope.evaluate.boxes`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from layerscope.cli import _common
from layerscope.errors import UsageError, plural


def check(args: argparse.Namespace) -> list[str]:
    """The box metrics asked for, and the data arguments, checked before any work."""
    from layerscope.evaluate.boxes import BOX_METRICS

    if args.scenes and args.boxes:
        raise UsageError("give --scenes N or --boxes JSON, not both")
    if args.shapes:
        raise UsageError("--shapes gives a classifier's object masks; a detector's boxes come with --scenes or --boxes")
    if args.scenes and args.source:
        raise UsageError("give SOURCE or --scenes N, not both")
    if args.scenes and args.scenes > args.max_images:
        raise UsageError(f"--scenes {args.scenes:,} is more than --max-images {args.max_images:,}")
    metrics = _common.csv_list(args.metrics) if args.metrics else list(BOX_METRICS)
    for m in metrics:
        if m not in BOX_METRICS:
            raise UsageError(f"metric {m!r} is not a box metric; with --scenes or --boxes: {', '.join(BOX_METRICS)}")
    if not metrics:
        raise UsageError(f"no metric given; box metrics: {', '.join(BOX_METRICS)}")
    return list(dict.fromkeys(metrics))


def _annotated_files(args: argparse.Namespace) -> tuple[list[Path], list[Any], list[Any], Any]:
    """The annotated images of a COCO-style file (each checked to exist), their boxes, their
    indices in the file, and the file's contents."""
    from layerscope.datasets.coco import load_coco_boxes

    coco = load_coco_boxes(args.boxes)
    root = Path(args.source) if args.source else Path(args.boxes).parent
    if args.source and not root.is_dir():
        raise UsageError(f"{root}: with --boxes, SOURCE is the folder of the annotated images")
    keep = [i for i, b in enumerate(coco.boxes) if len(b)]  # an image without boxes has no item
    if not keep:
        raise UsageError(f"{args.boxes}: no annotation has a box")
    if len(keep) > args.max_images:
        raise UsageError(f"{args.boxes}: {len(keep):,} annotated images, more than --max-images {args.max_images:,}")
    files = [root / coco.files[i] for i in keep]
    missing = [f for f in files if not f.is_file()]
    if missing:
        more = f" and {plural(len(missing) - 1, 'more')}" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]}: an image of {args.boxes} is missing{more}")
    return files, [coco.boxes[i] for i in keep], keep, coco


def run(
    args: argparse.Namespace,
    metrics: list[str],
    methods: list[str],
    baseline: list[str],
    paths: list[Path],
    options: dict[str, Any],
    explorer: Callable[..., Any],
) -> int:
    import numpy as np

    from layerscope.evaluate.boxes import evaluate_boxes
    from layerscope.evaluate.report import save_all

    annotated = _annotated_files(args) if args.boxes else None
    model = _common.load_model_from_args(args)
    from layerscope.capture.torch import resolve_device
    from layerscope.info import info_for

    model = model.to(resolve_device(args.device))
    info = info_for(model)
    prep = info.preprocessor()
    bs = args.batch_size
    first: list[Any] = []

    if annotated is None:
        from layerscope.datasets.scenes import iter_scenes
        from layerscope.models import demo_detector

        seed = demo_detector.EVAL_SEED if args.seed is None else args.seed
        n = args.scenes
        what = plural(n, "fresh scene")

        def batches() -> Iterator[tuple[Any, list[Any]]]:
            for images, anns, _ in iter_scenes(n, seed, demo_detector.IMAGE_SIZE, batch=bs):
                x = np.asarray(prep(list(images)))
                yield x, [_scaled(b, c, images.shape[1:3], x.shape[-2:]) for b, c in anns]
    else:
        files, boxes, keep, coco = annotated
        every = coco.class_indices(info.class_names)
        classes = [every[i] for i in keep]
        n = len(files)
        what = plural(n, "annotated image") + f" of {args.boxes}"

        def batches() -> Iterator[tuple[Any, list[Any]]]:
            from layerscope.inputs import load_image

            for s in range(0, n, bs):
                pictures = [np.asarray(load_image(f)) for f in files[s : s + bs]]
                xs = [np.asarray(prep([p])) for p in pictures]
                anns = [
                    _scaled(boxes[s + k], classes[s + k], pictures[k].shape[:2], xs[k].shape[-2:])
                    for k in range(len(xs))
                ]
                yield np.concatenate(xs), anns

    def kept(stream: Iterator[Any]) -> Iterator[Any]:
        for x, anns in stream:
            if not first:
                first.append(x[:1])
            yield x, anns

    ev, missed = evaluate_boxes(
        model, kept(batches()), methods, metrics, layers=args.layers, random_baseline=not args.no_random_baseline,
        steps=args.steps, baseline=tuple(baseline) if len(baseline) == 2 else baseline[0],
        perturb_batch=args.perturb_batch or 256, info=info, method_options=options, progress=not args.no_progress,
    )  # fmt: skip
    writers = {q: explorer(model, first[0], methods, ev, args, options, info) for q in paths if q.suffix == ".html"}
    save_all(ev, paths, overwrite=args.overwrite, writers=writers)
    print(
        f"{what}: {plural(ev.images, 'detected box', 'detected boxes')} explained "
        f"({plural(missed, 'ground-truth box', 'ground-truth boxes')} not detected, left out), "
        f"{plural(len(ev.layers), 'layer')}, {plural(len(methods), 'method')}\n"
    )
    print(ev.table(), end="")
    print(f"wrote {', '.join(str(q) for q in paths)}")
    return 0


def _scaled(boxes: Any, classes: Any, image_hw: Any, input_hw: Any) -> tuple[Any, Any]:
    """Boxes in an image's pixels → in the model input's (the preprocessing resizes, never crops)."""
    import numpy as np

    sy, sx = input_hw[0] / image_hw[0], input_hw[1] / image_hw[1]
    return np.asarray(boxes, dtype=np.float32) * np.float32([sx, sy, sx, sy]), np.asarray(classes)
