"""A dataset run's memory is bounded by the batch size and the queues, not by the number of
items: the peak RSS of a 2,000-item run is that of a 500-item run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two runs, 2,500 items

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import torch
    sys.path.insert(0, HELPERS)
    from helpers_batch import tiny_model
    from layerscope.batch import run_dataset
    from layerscope.batch.sources import ShapesSource

    torch.set_num_threads(1)
    model, info = tiny_model()
    r = run_dataset(ShapesSource(int(sys.argv[1]), size=32), out_dir=sys.argv[2], model=model, info=info,
                    batch_size=32, workers=1, progress="none", target="label")
    assert r.done == int(sys.argv[1])
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(own, children)
    """
)


def _peak_kib(tmp_path: Path, n: int) -> tuple[int, int]:
    script = tmp_path / "mem.py"
    script.write_text(SCRIPT.replace("HELPERS", repr(str(Path(__file__).parent))))
    out = subprocess.run(
        [sys.executable, str(script), str(n), str(tmp_path / f"run{n}")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
    )
    own, children = map(int, out.stdout.split())
    return own, children


def test_peak_rss_does_not_grow_with_the_item_count(tmp_path: Path) -> None:
    own_500, child_500 = _peak_kib(tmp_path, 500)
    own_2000, child_2000 = _peak_kib(tmp_path, 2000)
    print(f"peak RSS KiB: main {own_500} → {own_2000}, largest helper {child_500} → {child_2000}")
    # 4× the items: the main process and the largest helper grow by less than 10 % + 24 MiB
    # (the manifest rows of the merge and the list of keys are the only per-item state)
    assert own_2000 < own_500 * 1.10 + 24 * 1024, (own_500, own_2000)
    assert child_2000 < child_500 * 1.10 + 24 * 1024, (child_500, child_2000)
