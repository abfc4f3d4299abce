"""Sources: a glob does not follow a directory symlink loop (issue 18 item 18: 1,162 keys for
29 files), as a folder source does not; a folder counts its non-image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from layerscope.batch.sources import from_folder, from_glob


def _tree(root: Path) -> Path:
    for rel in ("a/x.png", "a/b/y.png", "z.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / rel)
    os.symlink(root / "a", root / "a" / "b" / "up")  # a/b/up → a: a loop
    (root / "readme.md").write_text("x")
    return root


def test_glob_does_not_follow_a_symlink_loop(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d")
    src = from_glob(str(root / "**" / "*.png"))
    keys = [it.key.removeprefix(root.as_posix() + "/") for it in src.items()]
    assert keys == ["a/b/y.png", "a/x.png", "z.png"]


def test_folder_source_same_files_and_counts_others(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d")
    src = from_folder(root)
    assert [it.key for it in src.items()] == ["a/b/y.png", "a/x.png", "z.png"]
    assert (src.other_files, src.unreadable) == (1, [])
