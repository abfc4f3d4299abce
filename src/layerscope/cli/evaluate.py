"""``layerscope evaluate``: faithfulness metrics at every layer, for one image or a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from layerscope.cli import _common
from layerscope.errors import UsageError

#: Image files taken from a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def add_parser(sub: Any) -> None:
    from layerscope.evaluate import METRICS

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
    p.add_argument("--seed", type=int, default=None, help="--shapes data set seed (default: the demo's EVAL_SEED)")
    _common.add_model_args(p)
    _common.add_method_args(p, several=True)
    p.add_argument(
        "--device",
        default="auto",
        help="where a PyTorch model runs: auto (CUDA when available), cpu, cuda, cuda:N or mps (default: auto)",
    )
    p.add_argument(
        "--metrics",
        default="deletion,insertion,road,drop,pointing,energy,sanity",
        help=f"comma-separated metrics: {', '.join(METRICS)} (default: all; pointing and energy need --shapes)",
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
    p.add_argument(
        "--perturb-batch",
        type=_common.positive_int,
        default=256,
        metavar="B",
        help="perturbed images per forward pass (default: 256)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common.add_output_args(
        p,
        "evaluation",
        "output prefix: writes PREFIX.csv, PREFIX.png, PREFIX.svg (and PREFIX.parquet if pyarrow is installed); "
        "a name ending in .csv/.parquet/.png/.svg writes that file only (default: evaluation)",
    )


def _outputs(prefix: str) -> list[Path]:
    from layerscope.evaluate.report import FORMATS

    p = Path(prefix)
    if p.suffix.lower() in FORMATS:
        return [p]
    out = [p.with_name(p.name + ext) for ext in (".csv", ".png", ".svg", ".html")]
    try:
        import pyarrow  # noqa: F401

        out.insert(1, p.with_name(p.name + ".parquet"))
    except ImportError:
        pass
    return out


def _folder_images(folder: Path) -> list[Path]:
    files = sorted(q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith("."))
    if not files:
        raise UsageError(f"{folder}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from layerscope.atomic import check_writable
    from layerscope.evaluate import evaluate
    from layerscope.evaluate.tour import check_metrics
    from layerscope.methods import get_method

    # Everything that can be checked is checked before the model is loaded.
    _common.check_model_name(args)
    _common.check_target(args)
    if args.framework != "torch":
        raise UsageError("layerscope evaluate needs a PyTorch model (the metrics re-run it on perturbed inputs)")
    metrics = check_metrics(args.metrics)
    methods = _common.csv_list(args.methods)
    if not methods:
        raise UsageError("no method given: --methods gradcam,…")
    for m in methods:
        get_method(m)
    baseline = _common.csv_list(args.baseline)
    if len(baseline) not in (1, 2):
        raise UsageError("--baseline takes one substrate or a deletion,insertion pair, e.g. zero,blur")
    from layerscope.evaluate import BASELINES

    for b in baseline:
        if b not in BASELINES:
            raise UsageError(f"unknown --baseline {b!r}; expected {', '.join(BASELINES)}")
    if args.shapes and args.source:
        raise UsageError("give SOURCE or --shapes N, not both")
    if args.seed is not None and not args.shapes:
        raise UsageError("--seed applies to --shapes only")
    paths = _outputs(args.output)
    for q in paths:
        check_writable(q, args.overwrite)
    options = _common.method_options(args, methods)
    files: list[Path] = []
    if args.source:
        src = Path(args.source)
        if src.is_dir():
            files = _folder_images(src)
        elif not src.exists():
            raise UsageError(f"{src}: no such file or folder")
        else:
            files = [src]

    model = _common.load_model_from_args(args)
    if args.framework == "torch":
        from layerscope.capture.torch import resolve_device

        model = model.to(resolve_device(args.device))  # the metrics run where the model is
    elif args.device not in ("auto", None):
        raise UsageError("--device is for PyTorch models; a Keras model runs where Keras placed it")
    from layerscope.info import info_for

    info = info_for(model)
    masks = None
    target: Any = args.target
    if args.shapes:
        from layerscope.datasets import make_dataset
        from layerscope.models import demo

        seed = demo.EVAL_SEED if args.seed is None else args.seed
        images, labels, masks = make_dataset(args.shapes, seed, demo.IMAGE_SIZE)
        x = np.asarray(info.preprocessor()(list(images)))
        if target is None:
            target = labels.tolist()  # the true class: the pointing games ask about the object
        what = f"{args.shapes} fresh shapes images"
    else:
        x = _load(files, info, progress=not args.no_progress) if files else None
        if x is None:
            from layerscope.inputs import as_rgb_array

            sample = as_rgb_array(_common.sample_image(_common.model_name(args)))
            x = np.asarray(info.preprocessor()([sample]))
        what = f"{len(x)} image(s)" + (f" from {args.source}" if args.source else " (the built-in sample)")
    if isinstance(target, str) and "," in target:
        target = _common.csv_list(target)
    ev = evaluate(
        model,
        x,
        methods,
        metrics,
        layers=args.layers,
        target=target,
        masks=masks,
        steps=args.steps,
        baseline=tuple(baseline) if len(baseline) == 2 else baseline[0],
        energy_region=args.energy_region,
        random_baseline=not args.no_random_baseline,
        cascade=args.cascade,
        batch_size=args.perturb_batch,
        info=info,
        progress=not args.no_progress,
        method_options=options,
    )
    print(f"{what}, {len(ev.layers)} layers, {len(methods)} method(s)\n")
    print(ev.table(), end="")
    for q in paths:
        if q.suffix == ".html":
            _explorer(q, model, x[:1], methods, ev, args, options, info)
        else:
            ev.save(q, overwrite=args.overwrite)
    print(f"wrote {', '.join(str(q) for q in paths)}")
    return 0


def _explorer(
    path: Path, model: Any, x: Any, methods: list[str], ev: Any, args: argparse.Namespace, options: Any, info: Any
) -> None:
    """The first image's interactive explorer, its per-layer chart showing each method's
    metrics (the means over all the images evaluated)."""
    from layerscope.grid import explain_many
    from layerscope.outputs import write_html

    exps = explain_many(model, x, methods, layers=args.layers, info=info, **options)
    series = {m: ev.series(m) for m in methods}
    write_html(exps, path, overwrite=args.overwrite, title="layerscope evaluate", series=series)


def _load(files: list[Path], info: Any, progress: bool) -> Any:
    """Each file decoded and preprocessed as it is read (a plain loop with a progress bar)."""
    import numpy as np

    from layerscope.inputs import load_image

    prep = info.preprocessor()
    it: Any = files
    if progress and len(files) > 1:
        from tqdm.auto import tqdm

        it = tqdm(files, desc="loading", unit="image", leave=False)
    return np.concatenate([np.asarray(prep([load_image(f)])) for f in it])
