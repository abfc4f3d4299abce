"""``layerscope evaluate``: faithfulness metrics at every layer, for one image or a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from layerscope.cli import _common
from layerscope.errors import UsageError, unknown_name

#: The most images an evaluation takes unless --max-images says more: each image's values are kept
#: (about 160 bytes per layer and method; 100,000 images of 13 layers, one method: ~210 MB).
MAX_IMAGES = 100_000
#: Images captured and scored together without --batch-size (bounds memory).
IMAGES_PER_BATCH = 64
#: The metrics' perturbed copies per forward pass without --perturb-batch.
METRIC_PERTURB_BATCH = 256


def add_parser(sub: Any) -> None:
    from layerscope.evaluate import default_metrics, registered

    p = sub.add_parser(
        "evaluate",
        help="how faithful is each layer's map? deletion/insertion, ROAD, drop/increase, pointing game, sanity",
        description="Score the maps of every layer, for each method, with faithfulness metrics (deletion and "
        "insertion AUC, ROAD, Average Drop/Increase), the pointing games (where object masks are known: --shapes) "
        "and the model-randomisation sanity check; the maps of the fully randomised model are scored too, as a "
        "baseline. Prints a table and writes PREFIX.csv (and .parquet with pyarrow) and a plot, PREFIX.png and "
        ".svg. Announces the number of forward passes before starting.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help="an image file or a folder of images (default: the built-in sample; see --shapes for a data set "
        "with object masks)",
    )
    p.add_argument(
        "--shapes",
        type=_common.positive_int,
        metavar="N",
        help="N fresh synthetic shapes images (with object masks; the demo model's data) instead of SOURCE",
    )
    p.add_argument(
        "--scenes",
        type=_common.positive_int,
        metavar="N",
        help="N fresh synthetic multi-object scenes with ground-truth boxes, for a detector (demo-detector): the box "
        "metrics for each detected box",
    )
    p.add_argument(
        "--boxes",
        metavar="JSON",
        help="ground-truth boxes of SOURCE's images in a COCO-style annotations file (images, annotations with bbox "
        "[x, y, w, h] and category_id, categories named as the model's classes), for a detector; SOURCE is the "
        "folder the file names are relative to (default: the file's folder)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="--shapes / --scenes data set seed (default: the demo models' EVAL_SEED)"
    )
    _common.add_model_args(p)
    _common.add_method_args(p, several=True)
    p.add_argument(
        "--device",
        default="auto",
        help="where a PyTorch model runs: auto (CUDA when available), cpu, cuda, cuda:N or mps (default: auto)",
    )
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated metrics: {', '.join(m.name for m in registered())} (default: "
        f"{','.join(default_metrics())}; pointing and energy need --shapes); with --scenes or --boxes: pointing, "
        "energy, deletion, insertion on each detected box (default: all four)",
    )
    p.add_argument("--steps", type=_common.positive_int, default=20, help="deletion/insertion steps (default: 20)")
    p.add_argument(
        "--baseline",
        default="zero,blur",
        metavar="DEL[,INS]",
        help="deletion/insertion substrate: zero, mean or blur, or a deletion,insertion pair (default: zero,blur, "
        "as RISE)",
    )
    p.add_argument(
        "--energy-region",
        choices=("box", "mask"),
        default="box",
        help="energy pointing game inside the object's box (the paper's) or its mask (default: box)",
    )
    p.add_argument(
        "--no-random-baseline",
        action="store_true",
        help="do not score the randomised model's maps (halves the perturbation passes)",
    )
    p.add_argument(
        "--cascade",
        action="store_true",
        help="run the whole cascading randomisation (one capture per parameterised module), not only the last step",
    )
    for action in p._actions:  # the methods' flag is also the metrics': one name for perturbed copies
        if action.dest == "perturb_batch":
            action.help = (
                f"perturbed copies per forward pass, for the metrics (default: {METRIC_PERTURB_BATCH}) and for a "
                "perturbation method (scorecam, ablationcam; default: 32)"
            )
    p.add_argument(
        "--batch-size",
        type=_common.positive_int,
        default=IMAGES_PER_BATCH,
        metavar="N",
        help=f"images captured and scored together (bounds memory; default: {IMAGES_PER_BATCH})",
    )
    p.add_argument(
        "--max-images",
        type=_common.positive_int,
        default=MAX_IMAGES,
        metavar="N",
        help=f"refuse more images than this, before any work (default: {MAX_IMAGES:,})",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default) or ray: Ray actors, each holding the model, score the chunks of --batch-size images "
        "(captures and every metric's perturbation passes); the same table",
    )
    p.add_argument(
        "--ray-actors", type=_common.positive_int, default=None, help="model actors of --engine ray (default: 1)"
    )
    p.add_argument(
        "--ray-address", help="the Ray cluster (default: RAY_ADDRESS, else a local Ray started for the evaluation)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common.add_output_args(
        p,
        "evaluation",
        "output prefix: writes PREFIX.csv, PREFIX.png, PREFIX.svg, PREFIX.html (and PREFIX.parquet if pyarrow is "
        "installed), all or none; a folder (ending in / or existing) writes evaluation.* inside it; a name ending in "
        ".csv/.parquet/.png/.svg writes that file only (default: evaluation)",
    )


def _outputs(prefix: str) -> list[Path]:
    from layerscope.evaluate.report import FORMATS

    p = Path(prefix)
    if prefix.endswith(("/", "\\")) or p.is_dir():
        p = p / "evaluation"  # a folder (made if it ends in a slash): the files go inside it
    elif p.suffix.lower() in FORMATS:
        return [p]
    out = [p.with_name(p.name + ext) for ext in (".csv", ".png", ".svg", ".html")]
    try:
        import pyarrow  # noqa: F401

        out.insert(1, p.with_name(p.name + ".parquet"))
    except ImportError:
        pass
    return out


def _folder_images(folder: Path) -> list[Path]:
    from layerscope.inputs import IMAGE_EXTENSIONS, image_files

    found = image_files(folder, recursive=False)
    if not found.files:
        raise UsageError(f"{folder}: holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return found.files


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from layerscope.atomic import check_writable
    from layerscope.evaluate import BASELINES, check_metrics, default_metrics, evaluate_batches
    from layerscope.evaluate.report import save_all
    from layerscope.methods import get_method

    # Everything that can be checked is checked before the model is loaded.
    _common.check_model_args(args)
    if args.framework != "torch":
        raise UsageError("layerscope evaluate needs a PyTorch model (the metrics re-run it on perturbed inputs)")
    boxed = bool(args.scenes or args.boxes)
    if boxed:
        from layerscope.cli import _evaluate_boxes

        metrics = _evaluate_boxes.check(args)
    else:
        metrics = check_metrics(args.metrics or default_metrics())
    methods = _common.csv_list(args.methods)
    if not methods:
        raise UsageError("no method given: --methods gradcam,…")
    for m in methods:
        get_method(m)
    baseline = _common.csv_list(args.baseline)
    if len(baseline) not in (1, 2):
        raise UsageError("--baseline takes one substrate or a deletion,insertion pair, e.g. zero,blur")
    for b in baseline:
        if b not in BASELINES:
            raise UsageError(unknown_name("--baseline", b, BASELINES, valid="expected"))
    _check_engine(args, boxed)
    if args.shapes and args.source:
        raise UsageError("give SOURCE or --shapes N, not both")
    if args.seed is not None and not (args.shapes or args.scenes):
        raise UsageError("--seed applies to --shapes and --scenes only")
    if args.shapes and args.shapes > args.max_images:
        raise UsageError(
            f"--shapes {args.shapes:,} is more than --max-images {args.max_images:,} (each image's values are kept); "
            "pass --max-images N to allow more"
        )
    paths = _outputs(args.output)
    if args.output.endswith(("/", "\\")):
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{args.output}: cannot make the folder: {e.strerror or e}") from None
    for q in paths:
        check_writable(q, args.overwrite)
    # --perturb-batch is the metrics' too: a method option only where a chosen method has it.
    has_copies = any("perturb_batch" in get_method(m).options for m in methods)
    options = _common.method_options(
        argparse.Namespace(**{**vars(args), "perturb_batch": args.perturb_batch if has_copies else None}), methods
    )
    if boxed:
        return _evaluate_boxes.run(args, metrics, methods, baseline, paths, options, _explorer_writer)
    files: list[Path] = []
    if args.source:
        src = Path(args.source)
        if src.is_dir():
            files = _folder_images(src)
        elif not src.exists():
            raise UsageError(f"{src}: no such file or folder")
        else:
            files = [src]
        if len(files) > args.max_images:
            raise UsageError(
                f"{src}: {len(files):,} images, more than --max-images {args.max_images:,}; pass --max-images N "
                "to allow more"
            )

    model = _common.load_model_from_args(args)
    from layerscope.capture.torch import resolve_device

    model = model.to(resolve_device(args.device))  # the metrics run where the model is
    from layerscope.explanation import resolve_target
    from layerscope.info import info_for

    info = info_for(model)
    target: Any = args.target
    if isinstance(target, str) and "," in target:
        target = _common.csv_list(target)
    target = resolve_target(target, info.class_names)
    prep = info.preprocessor()
    bs = args.batch_size
    if args.shapes:
        from layerscope.datasets.shapes import iter_dataset
        from layerscope.models import demo

        seed = demo.EVAL_SEED if args.seed is None else args.seed
        n = args.shapes
        what = f"{_plural(n, 'fresh shapes image')}"

        def batches() -> Any:
            for images, labels, masks in iter_dataset(n, seed, demo.IMAGE_SIZE, batch=bs):
                # The true class by default: the pointing games ask about the object.
                t = labels.tolist() if target is None else _slice(target, 0, len(labels))
                yield np.asarray(prep(list(images))), t, masks
    else:
        n = max(1, len(files))
        what = _plural(n, "image") + (f" from {args.source}" if args.source else " (the built-in sample)")

        def batches() -> Any:
            if not files:
                from layerscope.inputs import as_rgb_array

                sample = as_rgb_array(_common.sample_image(_common.model_name(args)))
                yield np.asarray(prep([sample])), _slice(target, 0, 1), None
                return
            for s in range(0, len(files), bs):
                yield _load(files[s : s + bs], prep), _slice(target, s, min(s + bs, len(files))), None

    first: list[Any] = []

    def kept(stream: Any) -> Any:
        for xb, tb, mb in stream:
            if not first:
                first.append(xb[:1])  # the explorer shows the first image
            yield xb, tb, mb

    progress = not args.no_progress
    bar_files = None
    if progress and len(files) > 1:
        from tqdm.auto import tqdm

        bar_files = tqdm(total=len(files), desc="loading", unit="image", leave=False)
    reaper = _start_reaper(args)
    try:
        ev = evaluate_batches(
            model, kept(_counted(batches(), bar_files)), n, methods, metrics, layers=args.layers,
            has_masks=bool(args.shapes), info=info, progress=progress, random_baseline=not args.no_random_baseline,
            cascade=args.cascade, method_options=options, steps=args.steps,
            baseline=tuple(baseline) if len(baseline) == 2 else baseline[0], energy_region=args.energy_region,
            perturb_batch=args.perturb_batch or METRIC_PERTURB_BATCH, engine=args.engine,
            ray_actors=args.ray_actors or 1, ray_address=args.ray_address,
        )  # fmt: skip
    finally:
        if bar_files is not None:
            bar_files.close()
        if reaper is not None:
            from layerscope.batch.ray_engine import stop_reaper

            stop_reaper(reaper)
    # Every file first, as one set (all or none), then the table: a reader that leaves
    # (`| head -1`) or a closed stdout never loses a file.
    writers = {
        q: _explorer_writer(model, first[0], methods, ev, args, options, info) for q in paths if q.suffix == ".html"
    }
    save_all(ev, paths, overwrite=args.overwrite, writers=writers)
    print(f"{what}, {_plural(len(ev.layers), 'layer')}, {_plural(len(methods), 'method')}\n")
    print(ev.table(), end="")
    print(f"wrote {', '.join(str(q) for q in paths)}")
    return 0


def _check_engine(args: argparse.Namespace, boxed: bool) -> None:
    """``--engine``, ``--ray-actors`` and ``--ray-address``, checked before any work (Ray
    installed included)."""
    from layerscope.evaluate import ray_engine

    if args.engine != "ray":
        if args.ray_actors is not None or args.ray_address:
            raise UsageError("--ray-actors and --ray-address apply to --engine ray")
        return
    if boxed:
        raise UsageError("the box metrics (--scenes, --boxes) run on the local engine only; drop --engine ray")
    ray_engine.check(args.engine, args.ray_actors or 1)


def _start_reaper(args: argparse.Namespace) -> int | None:
    """With ``--engine ray`` and no cluster address, the evaluation starts its own Ray: a
    watchdog process then ends Ray's processes should this one be killed (SIGKILL included)."""
    import os

    if args.engine != "ray" or args.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    from layerscope.batch.ray_engine import start_reaper

    return start_reaper(os.getpid())


def _slice(target: Any, start: int, stop: int) -> Any:
    """The targets of images ``start … stop-1`` (one target for all stays one)."""
    return target[start:stop] if isinstance(target, list) else target


def _counted(stream: Any, bar: Any) -> Any:
    for item in stream:
        if bar is not None:
            bar.update(len(item[0]))
        yield item


def _explorer_writer(
    model: Any, x: Any, methods: list[str], ev: Any, args: argparse.Namespace, options: Any, info: Any
) -> Any:
    """Writes the first image's interactive explorer to a given (temporary) path: its
    per-layer chart shows each method's metrics (the means over all the images evaluated)."""

    def write(path: Path) -> None:
        from layerscope.grid import explain_many
        from layerscope.outputs import write_html

        exps = explain_many(model, x, methods, layers=args.layers, info=info, **options)
        series = {m: ev.series(m) for m in methods}
        write_html(exps, path, overwrite=True, title="layerscope evaluate", series=series)

    return write


def _load(files: list[Path], prep: Any) -> Any:
    """Files decoded and preprocessed, one batch."""
    import numpy as np

    from layerscope.inputs import load_image

    return np.concatenate([np.asarray(prep([load_image(f)])) for f in files])
