"""Regenerate the README's GIF, docs/grad_cam.gif, from today's `layerscope tour`.

The README's first command ends in `layerscope tour`: no arguments, the built-in demo
model on its built-in sample image, no network. This script runs exactly that command
(as `python -m layerscope tour`, so the checkout's own code is used), offline, in a
temporary folder, and copies the `grad_cam.gif` it writes over `docs/grad_cam.gif`.
`tests/docs/test_readme_gif.py` checks that the committed GIF still has the frame size
and frame count that the command writes today, so the picture cannot go stale silently.

    python scripts/regenerate_readme_gif.py          # rewrites docs/grad_cam.gif
    python scripts/regenerate_readme_gif.py --check  # exit 1 if its size/frames differ
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_GIF = ROOT / "docs" / "grad_cam.gif"

#: The README's first command, as it runs after the install (no arguments).
TOUR_COMMAND = ["tour"]


def offline_env() -> dict[str, str]:
    """The environment for the run: no network, no GPU needed, a fixed font cache."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_tour(folder: Path) -> Path:
    """Run `layerscope tour` in *folder* and return the GIF it wrote."""
    result = subprocess.run(
        [sys.executable, "-m", "layerscope", *TOUR_COMMAND],
        cwd=folder,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"layerscope tour failed ({result.returncode}): {result.stderr.strip()}")
    gif = folder / "grad_cam.gif"
    if not gif.is_file():
        raise RuntimeError(f"layerscope tour wrote no grad_cam.gif: {result.stdout.strip()}")
    return gif


def gif_facts(path: Path) -> tuple[tuple[int, int], int]:
    """(frame size, frame count) of a GIF."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size, im.n_frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        gif = run_tour(Path(tmp))
        new = gif_facts(gif)
        if args.check:
            old = gif_facts(README_GIF) if README_GIF.is_file() else None
            if old != new:
                print(
                    f"{README_GIF}: {old} but `layerscope tour` writes {new}; "
                    "run python scripts/regenerate_readme_gif.py",
                    file=sys.stderr,
                )
                return 1
            print(f"{README_GIF}: up to date ({new[0][0]}x{new[0][1]}, {new[1]} frames)")
            return 0
        shutil.copyfile(gif, README_GIF)
    print(f"{README_GIF}: rewritten ({new[0][0]}x{new[0][1]}, {new[1]} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
