"""The architecture as a contract: the layering of DESIGN.md (import-linter), no model
attributes, and process-wide state left as it was by the CLI."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "layerscope"


def test_import_layers_and_adapter_independence_hold() -> None:
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.skip("import-linter is not installed (it comes with the test extra)")
    done = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_layerscope_sets_no_attribute_on_models() -> None:
    """Model facts travel as ModelInfo: no `layerscope_*` attribute is written or read anywhere."""
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in SRC.rglob("*.py")
        for i, line in enumerate(p.read_text("utf-8").splitlines(), 1)
        if re.search(r"\blayerscope_(aliases|preprocess|outputs|warning)\b", line)
    ]
    assert not found, found


def test_every_subcommand_restores_process_state(capsys: pytest.CaptureFixture[str]) -> None:
    from layerscope import cli

    logger = logging.getLogger("layerscope")
    env = "TF_CPP_MIN_LOG_LEVEL"
    before = (
        warnings.showwarning,
        list(logger.handlers),
        logger.level,
        logger.propagate,
        socket.getdefaulttimeout(),
        os.environ.get(env),
    )
    assert cli.main(["methods"]) == 0
    assert cli.main(["tour", "--colormap", "nope"]) == 2
    after = (
        warnings.showwarning,
        list(logger.handlers),
        logger.level,
        logger.propagate,
        socket.getdefaulttimeout(),
        os.environ.get(env),
    )
    assert after == before
    capsys.readouterr()


def test_grid_is_the_function_even_after_its_module_is_imported() -> None:
    """``layerscope.grid`` (the function) shares its name with the module ``layerscope.grid``."""
    code = (
        "import sys, layerscope, layerscope.grid, layerscope.cli.grid\n"
        "assert callable(layerscope.grid) and layerscope.grid.__name__ == 'grid', layerscope.grid\n"
        "assert callable(layerscope.explain_many)\n"
        "assert 'torch' not in sys.modules and 'keras' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
