"""The README's GIF is what `layerscope tour` writes today (frame size and count)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "regenerate_readme_gif", ROOT / "scripts" / "regenerate_readme_gif.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_shows_the_committed_gif():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/grad_cam.gif" in readme


def test_committed_gif_matches_what_tour_writes(tmp_path):
    script = _script()
    gif = script.run_tour(tmp_path)
    size, frames = script.gif_facts(gif)
    committed_size, committed_frames = script.gif_facts(script.README_GIF)
    assert frames == 13  # the demo model's 13 conv layers
    assert (committed_size, committed_frames) == (size, frames), (
        "docs/grad_cam.gif is stale: run python scripts/regenerate_readme_gif.py"
    )
