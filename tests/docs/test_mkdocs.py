"""The docs site builds with `mkdocs build --strict` (broken links, bad API pages fail it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path):
    # mkdocs, mkdocs-material and mkdocstrings[python] come with the test extra: no skip.
    import mkdocs  # noqa: F401
    import mkdocstrings  # noqa: F401

    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # the API page is made from the docstrings, not left empty
    for name in (
        "layerscope.explain",
        "layerscope.Explanation",
        "layerscope.grid.grid",
        "layerscope.run_dataset",
        "layerscope.evaluate",
    ):
        assert f'id="{name}"' in api, name
