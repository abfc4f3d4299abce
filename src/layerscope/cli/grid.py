"""``layerscope grid``: a methods × layers grid of one image."""

from __future__ import annotations

import argparse
from typing import Any

from layerscope.cli import _common
from layerscope.errors import UsageError, plural


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "grid",
        help="a layers × methods grid of one image (rows: methods, columns: layers)",
        description="Explain one image with several methods at every conv layer and write one labelled image: "
        "a row per method, a column per layer.",
    )
    p.add_argument("image", nargs="?", help="image file (default: a built-in sample image)")
    _common.add_model_args(p, model_output=True)
    _common.add_method_args(p, several=True)
    _common.add_render_args(p, "normalise each cell on its own range, or each method's row on one shared range")
    p.add_argument("--cell", type=_common.positive_int, default=160, help="cell size in pixels (default: 160)")
    _common.add_device_args(p)
    _common.add_output_args(p, "grid.png", "output image: .png, .jpg or .webp (default: grid.png)")


def run(args: argparse.Namespace) -> int:
    from layerscope.grid import grid
    from layerscope.inputs import load_image
    from layerscope.methods import get_method
    from layerscope.outputs import check_image_output, write_image

    path = check_image_output(args.output, args.overwrite)
    _common.check_model_args(args)
    options = _common.render_options(args)
    methods = _common.csv_list(args.methods)
    if not methods:
        raise UsageError("no method given for the grid")
    for m in methods:
        get_method(m)
    method_options = _common.method_options(args, methods)
    image = load_image(args.image) if args.image else _common.sample_image(_common.model_name(args))
    model = _common.load_model_from_args(args)
    img = grid(
        model,
        image,
        methods,
        layers=args.layers,
        target=args.target,
        options=options,
        device=args.device,
        precision=args.precision,
        output=args.model_output,
        **method_options,
    )
    write_image(path, img, args.overwrite)
    print(f"{_common.shown(path)}: {plural(len(methods), 'method')} × layers grid, {img.width}×{img.height} px")
    return 0
