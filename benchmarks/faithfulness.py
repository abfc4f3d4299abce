"""Faithfulness of every one-pass CAM method at every layer of the demo model.

On fresh shapes images (dataset seed ``EVAL_SEED`` of :mod:`layerscope.models.demo`, never
used in training), explaining the true class, with :func:`layerscope.evaluate.evaluate`:
deletion and insertion AUC (20 steps, RISE's zero / blur substrates), ROAD (MoRF, LeRF,
combined; noisy linear imputation, 10–90 %), Average Drop / Increase, the pointing game and
the energy pointing game (object masks known), each also for the maps of the fully
randomised model (the baseline), and the cascading model-randomisation check. Prints a
markdown report: the per-layer table, the winner of each metric, and the rank correlation
between metrics over the (method, layer) cells. Writes the plot (``--plot``).

ROAD's sparse solves dominate the cost on a CPU, so ROAD may run on fewer images
(``--road-n``). The parts can run as separate processes (``--part``, each saving its rows as
CSV with ``--rows``) and be reported together (``--report A.csv B.csv``).

Usage::

    python benchmarks/faithfulness.py [--n 1000] [--road-n N] [--methods gradcam,...] [--plot docs/faithfulness.png]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence

import numpy as np

#: The metric groups of the two parts.
MAIN = ("deletion", "insertion", "drop", "pointing", "energy", "sanity")
ROAD = ("road",)
#: The table's columns (the issue's four, then the rest).
TABLE = ("deletion_auc", "insertion_auc", "road_combined", "pointing_game")


def one_pass_methods() -> list[str]:
    from layerscope.methods import ONE_PASS, get_method, list_methods

    return [name for name in list_methods() if get_method(name).needs <= ONE_PASS]


def run_part(args: argparse.Namespace, groups: Sequence[str], n: int) -> list[dict]:
    import torch

    import layerscope
    from layerscope.datasets import make_dataset
    from layerscope.evaluate import evaluate
    from layerscope.models import demo

    torch.set_num_threads(args.threads)
    model = layerscope.load_model("demo")
    images, labels, masks = make_dataset(n, args.seed, demo.IMAGE_SIZE)
    t0 = time.perf_counter()
    ev = evaluate(
        model,
        list(images),
        methods=args.methods,
        metrics=groups,
        target=labels.tolist(),
        masks=masks,
        steps=args.steps,
        cascade="sanity" in groups,
        perturb_batch=args.perturb_batch,
        batch_size=args.batch_size,
        progress=True,
    )
    print(f"# part {','.join(groups)}: {n} images, {ev.plan.describe()}, {time.perf_counter() - t0:.0f} s")
    return ev.rows(), ev


def read_rows(paths: Sequence[str]) -> list[dict]:
    rows = []
    for p in paths:
        with open(p, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def report(ev, plot: str | None) -> None:
    from layerscope.evaluate import RANDOM, rank_correlation
    from layerscope.evaluate._registry import column

    def title(metric: str) -> str:
        return column(metric).title

    def cell(metric: str, m: str, layer: str) -> str:
        v = ev.mean(metric, m, layer)
        return "—" if not np.isfinite(v) else f"{v:.3f}"

    counts = {metric: max(v[2] for k, v in ev.summary.items() if k[3] == metric) for metric in ev.metrics}
    print("## Per layer and method (trained model)\n")
    for metric in [m for m in TABLE if m in ev.metrics] + [m for m in ev.metrics if m not in TABLE]:
        print(f"### {title(metric)} {column(metric).arrow} ({counts[metric]} images)\n")
        print("| layer | " + " | ".join(ev.methods) + " |")
        print("|---|" + "---:|" * len(ev.methods))
        for layer in ev.layers:
            print(f"| {layer} | " + " | ".join(cell(metric, m, layer) for m in ev.methods) + " |")
        print()
    print("## Winners (best mean over images; random-model maps of the same method and layer in brackets)\n")
    print("| metric | method | layer | value | random-model maps |")
    print("|---|---|---|---:|---:|")
    for metric in ev.metrics:
        m, layer, v = ev.best(metric)
        r = ev.mean(metric, m, layer, RANDOM)
        print(f"| {title(metric)} | {m} | {layer} | {v:.3f} | {'—' if not np.isfinite(r) else f'{r:.3f}'} |")
    print()
    # Agreement between metrics: Spearman over the (method, layer) cells, oriented so that
    # higher is better for every metric.
    cells = [(m, layer) for m in ev.methods for layer in ev.layers]
    mets = [m for m in ev.metrics if column(m).direction != "zero"]
    vec = {}
    for metric in mets:
        sign = 1.0 if column(metric).direction == "higher" else -1.0
        vec[metric] = np.asarray([sign * ev.mean(metric, m, layer) for m, layer in cells])
    print("## Agreement between metrics (Spearman over the method × layer cells, each oriented higher = better)\n")
    print("| | " + " | ".join(title(m) for m in mets) + " |")
    print("|---|" + "---:|" * len(mets))
    for a in mets:
        row = []
        for b in mets:
            ok = np.isfinite(vec[a]) & np.isfinite(vec[b])
            rho = rank_correlation(vec[a][ok][None], vec[b][ok][None])[0] if ok.sum() > 2 else np.nan
            row.append("—" if not np.isfinite(rho) else f"{rho:+.2f}")
        print(f"| {title(a)} | " + " | ".join(row) + " |")
    print()
    if plot:
        ev.save(plot, overwrite=True)
        print(f"plot: {plot}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts and print the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="fresh images (default: 1000)")
    p.add_argument("--road-n", type=int, default=None, help="images for ROAD (default: --n)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every one-pass method)")
    p.add_argument("--steps", type=int, default=20, help="deletion/insertion steps (default: 20)")
    p.add_argument("--seed", type=int, default=None, help="dataset seed (default: the demo's EVAL_SEED)")
    p.add_argument("--perturb-batch", type=int, default=256, help="perturbed inputs per forward pass")
    p.add_argument("--batch-size", type=int, default=32, help="images captured and scored together")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--part", choices=("all", "main", "road"), default="all", help="which metrics to run")
    p.add_argument("--rows", help="also write this part's rows to this CSV")
    p.add_argument("--report", nargs="+", metavar="CSV", help="only report the rows of earlier runs")
    p.add_argument("--plot", default=None, help="write the plot here (.png or .svg)")
    args = p.parse_args(argv)

    from layerscope.evaluate import Evaluation
    from layerscope.models import demo

    args.seed = demo.EVAL_SEED if args.seed is None else args.seed
    args.methods = args.methods or ",".join(one_pass_methods())
    if args.report:
        rows = read_rows(args.report)
    else:
        rows = []
        parts = {"all": [(MAIN, args.n), (ROAD, args.road_n or args.n)], "main": [(MAIN, args.n)]}
        parts["road"] = [(ROAD, args.road_n or args.n)]
        for groups, n in parts[args.part]:
            part_rows, ev = run_part(args, groups, n)
            rows += part_rows
            if "sanity" in groups:
                print("## Cascading randomisation (mean rank correlation over layers, per step)\n")
                for method, c in ev.cascade.items():
                    means = np.nanmean(c.mean(), axis=1)
                    steps = ", ".join(f"{s}: {v:+.2f}" for s, v in zip(c.steps, means, strict=True))
                    print(f"- {method}: {steps}")
                print()
        if args.rows:
            from layerscope.evaluate.report import csv_bytes

            with open(args.rows, "wb") as f:
                f.write(csv_bytes(rows))
    report(Evaluation.from_rows(rows), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
