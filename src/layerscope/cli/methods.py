"""``layerscope methods``: the CAM methods and what each costs."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "methods",
        help="list the CAM methods",
        description="List the CAM methods layerscope computes, with what each costs (passes) and whether it needs "
        "gradients or PyTorch, then the fusions across layers (tour --fuse NAME).",
    )


def run(args: argparse.Namespace) -> int:
    from layerscope.methods import get_fusion, get_method, list_fusions, list_methods

    for name in list_methods():
        m = get_method(name)
        grads = "gradients" if m.needs_gradients or m.kind == "pixel" else "no gradients"
        torch_only = "" if "keras" in m.frameworks else ", PyTorch only"
        print(f"{name:20s} {m.summary} [{m.cost}; {grads}{torch_only}]", flush=True)
    print("\nfusion (one map from several layers' maps, any method; tour --fuse NAME):", flush=True)
    for name in list_fusions():
        f = get_fusion(name)
        print(f"{name:20s} {f.summary} [{f.cost}]", flush=True)
    return 0
