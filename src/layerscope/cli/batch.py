"""``layerscope batch`` and ``layerscope batch-merge``: explain a whole dataset into a run folder."""

from __future__ import annotations

import argparse
from typing import Any

from layerscope.cli import _common


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="explain every image of a folder, glob, list file, CIFAR-10 or the shapes dataset",
        description="Explain a whole dataset into RUN_DIR: per-item outputs (--save), a Parquet manifest with one "
        "row per item (prediction, per-layer statistics, status), per-class mean maps and, with --report, an index "
        "page. Rerunning the same command resumes where a crash or Ctrl-C stopped it; --shard I/N and --engine ray "
        "spread it over processes or machines.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help="a folder (recursive, image files), a glob pattern (quote it), a .txt file of paths (one a line), "
        "a Parquet/Arrow table (--image-column), WebDataset tar shards ('shards-{000000..000099}.tar'), a folder "
        "saved by datasets' save_to_disk, or any of them as a URI (s3://bucket/photos/, gs://…)",
    )
    p.add_argument("--image-column", help="a table's or dataset's image column: bytes or paths (default: image)")
    p.add_argument("--id-column", help="a table's column of unique item ids (default: the row number)")
    p.add_argument("--label-column", help="a table's column of true labels, class indices or names (--target label)")
    p.add_argument(
        "-o", "--output", required=True, metavar="RUN_DIR", help="the run folder: a path or a URI (s3://bucket/run)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a different run found in RUN_DIR")
    p.add_argument("--cifar10", action="store_true", help="read CIFAR-10 (cached, downloaded, or --cifar10-path)")
    p.add_argument(
        "--split",
        default="test",
        help="CIFAR-10's split (test, train), or a saved datasets DatasetDict's (default: test)",
    )
    p.add_argument("--cifar10-path", metavar="PATH", help="a local cifar-10-python.tar.gz or its extracted folder")
    p.add_argument(
        "--shapes", type=_common.positive_int, metavar="N", help="read N samples of the synthetic shapes dataset"
    )
    p.add_argument("--shapes-seed", type=_common.index, default=1, help="the shapes dataset's seed (default: 1)")
    p.add_argument("--limit", type=_common.positive_int, help="at most this many CIFAR-10 or shapes items")
    p.add_argument(
        "--save",
        default="npz",
        help="what to write, comma-separated: maps (every item's maps in the run's columnar store, maps/*.arrow: "
        "the fastest; read back with layerscope.open_run) and/or per-item files by output extension (npz: the maps, "
        "compressed; gif, png, webp, mp4: the animation; html: the explorer; or one a plugin registered), or none "
        "(default: npz)",
    )
    p.add_argument(
        "--maps-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="number type of --save maps (default: float32; float16 halves the size, see the docs for its error)",
    )
    p.add_argument(
        "--retry-errors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a rerun, explain again the items recorded as errors (default: on)",
    )
    p.add_argument(
        "--recheck",
        action="store_true",
        help="on a rerun, read every done file again and redo those whose content changed",
    )
    p.add_argument("--report", action="store_true", help="write RUN_DIR/report.html (thumbnails, sortable) at the end")
    p.add_argument("--workers", type=_common.index, default=2, help="image reading processes (default: 2; 0: none)")
    p.add_argument(
        "--writers",
        type=_common.positive_int,
        help="processes that write the outputs (default: 1; up to 4 for gif/html; --engine ray: its actors write)",
    )
    p.add_argument("--shard", metavar="I/N", help="only shard I of N (items split by content hash)")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray (Ray Data)")
    p.add_argument(
        "--ray-actors",
        type=_common.positive_int,
        default=1,
        help="model actors of --engine ray, each writing its own output (default: 1)",
    )
    p.add_argument("--ray-address", help="the Ray cluster (default: RAY_ADDRESS, else a local Ray started for the run)")
    p.add_argument(
        "--progress", choices=("auto", "bar", "log", "none"), default="auto", help="a bar on a terminal, log lines else"
    )
    p.add_argument("--log-every", type=_common.positive_int, default=500, help="items between progress lines (500)")
    p.add_argument(
        "--commit-every", type=_common.positive_int, default=256, help="items per manifest part (default: 256)"
    )
    _common.add_model_args(p)
    _common.add_method_args(p)
    p.add_argument(
        "--batch-size", type=_common.positive_int, default=32, help="images per forward/backward pass (default: 32)"
    )
    for action in p._actions:
        if "--target" in action.option_strings:
            action.help = "class to explain: an index or name, or label (the true label, with --cifar10 or --shapes) "
            action.help += "(default: the top-1 prediction)"
    _common.add_render_args(p)
    _common.add_device_args(p)

    m = sub.add_parser(
        "batch-merge",
        help="merge the shards of a batch run",
        description="Merge every shard's manifest parts of RUN_DIR into RUN_DIR/manifest.parquet and write the "
        "per-class mean maps (and report.html with --report). A run merges itself when its last shard ends.",
    )
    m.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (a path or a URI)")
    m.add_argument("--report", action="store_true", default=None, help="also write report.html")


def _explain_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--device`` and ``--precision`` for ``explain``, where they differ from its defaults."""
    return {
        name: getattr(args, name)
        for name, default in (("device", None), ("precision", "default"))
        if getattr(args, name, None) not in (None, default)
    }


def run(args: argparse.Namespace) -> int:
    if args.command == "batch-merge":
        from layerscope.batch import merge_run

        path = merge_run(args.run_dir, report=args.report)
        print(f"merged → {path}")
        return 0

    from layerscope.batch import RunConfig, SourceSpec, run_config

    _common.check_model_args(args, classes=False)  # --target label: each item's own label
    render = _common.render_options(args)
    method_options = _common.method_options(args, [args.method])
    explain_options = _explain_options(args)
    layers = _common.csv_list(args.layers) or None if args.layers else None
    model = _common.load_model_from_args(args)
    spec = SourceSpec(
        source=args.source,
        cifar10=args.cifar10,
        split=args.split,
        cifar10_path=args.cifar10_path,
        shapes=args.shapes,
        shapes_seed=args.shapes_seed,
        limit=args.limit,
        image_column=args.image_column,
        id_column=args.id_column,
        label_column=args.label_column,
    )
    config = RunConfig(
        out_dir=args.output,
        layers=layers,
        method=args.method,
        target=args.target,
        save=args.save,
        maps_dtype=args.maps_dtype,
        batch_size=args.batch_size,
        workers=args.workers,
        writers=args.writers,
        shard=args.shard,
        engine=args.engine,
        overwrite=args.overwrite,
        report=args.report,
        render=render,
        progress=args.progress,
        log_every=args.log_every,
        commit_every=args.commit_every,
        method_options=method_options,
        explain_options=explain_options,
        ray_actors=args.ray_actors,
        ray_address=args.ray_address,
        retry_errors=args.retry_errors,
        recheck=args.recheck,
    )
    result = run_config(config, spec, model)
    if result.merged:
        print(f"manifest: {result.manifest}")
    else:
        print(f"shard done; the run merges when its last shard ends (or run `layerscope batch-merge {args.output}`)")
    return 0
