"""``layerscope layers``: a model's layers and their real output shapes."""

from __future__ import annotations

import argparse
from typing import Any

from layerscope.cli import _common


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "layers",
        help="list a model's layers and their output shapes",
        description="List the layers layerscope explains by default (or every module with --all), in forward "
        "order, with each layer's real output shape for the model's input size. Reads no weights: the shapes do "
        "not depend on them.",
    )
    _common.add_model_args(p)
    p.add_argument("--all", action="store_true", help="list every module, not only the default layers")


def run(args: argparse.Namespace) -> int:
    from layerscope.capture import detect_framework, get_adapter
    from layerscope.info import info_for
    from layerscope.targets import image_features, is_dual_encoder

    _common.check_model_args(args)
    size = _common.size(args.size)
    model = _common.load_model_from_args(args, listing=True)
    info = info_for(model)
    if size is None:
        prep = info.preprocessor()
        size = tuple(getattr(prep, "size", None) or (224, 224))
    run = image_features if is_dual_encoder(model) else None  # CLIP: its image tower alone
    rows = get_adapter(detect_framework(model)).layer_shapes(model, size, info, every_module=args.all, run_model=run)
    w = max([len(r[0]) for r in rows] + [5])
    pw = max([len(r[1]) for r in rows] + [6])
    print(f"{'layer':{w}s}  {'module':{pw}s}  output")
    for name, path, shape in rows:
        print(f"{_common.shown(name):{w}s}  {_common.shown(path):{pw}s}  {'x'.join(map(str, shape))}")
    return 0
