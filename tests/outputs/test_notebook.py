"""The notebook view: a tiny notebook executed with nbclient shows the explorer inline
(``_repr_html_``), a one-line ``text/plain``, and ``exp.show(layer=...)`` draws a frame."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TESTS = Path(__file__).parent


def test_notebook_shows_the_explorer_inline(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
            "import matplotlib; matplotlib.use('agg')\n"
            "from test_outputs import make_exp\n"
            "exp = make_exp(1)\n"
            "exp"
        ),
        nbformat.v4.new_code_cell("%matplotlib inline\nax = exp.show(layer='conv_b')"),
    ]
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.kernel_manager_class  # noqa: B018 - nbclient picks the kernel of this interpreter when none is installed
    client.execute()
    out = nb.cells[0].outputs[0]
    assert out["output_type"] == "execute_result"
    html = out["data"]["text/html"]
    assert '<div class="ls-explorer"' in html and "LayerscopeExplorer" in html and 'class="ls-data"' in html
    assert out["data"]["text/plain"] == "Explanation(3 layers, gradcam, 1 image, class 'tabby' p=0.87)"
    pngs = [o for o in nb.cells[1].outputs if "image/png" in o.get("data", {})]
    assert pngs, nb.cells[1].outputs
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(pngs[0]["data"]["image/png"]))).convert("RGB"))
    assert img.shape[0] > 100 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a drawn frame, in colour


def test_show_draws_the_layers_frame_with_matplotlib() -> None:
    import matplotlib

    matplotlib.use("agg")
    sys.path.insert(0, str(TESTS))
    from test_outputs import make_exp

    from layerscope.errors import UsageError

    exp = make_exp(1)
    ax = exp.show(layer="conv_b")
    shown = np.asarray(ax.get_images()[0].get_array())
    assert np.array_equal(shown, np.asarray(exp.frames(0)[1]))
    shared = np.asarray(exp.show(layer="conv_a", scale="shared").get_images()[0].get_array())
    assert np.array_equal(shared, np.asarray(exp.frames(0, scale="shared")[0]))
    with pytest.raises(UsageError, match="Did you mean conv_b"):
        exp.show(layer="conv_bb")
