"""The layers × methods grid (library and CLI) and the CLI's method options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import layerscope
from conftest import run_cli
from layerscope.errors import UsageError
from layerscope.info import ModelInfo, attach_info
from layerscope.inputs import Preprocess
from layerscope.models import vgg
from layerscope.render.grid import GAP, draw_grid


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features, names = vgg.make_features(widths=(8, 16, 16, 32, 32))
        attach_info(self, ModelInfo(layers=names, preprocess=Preprocess((48, 64))))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img[10:30, 20:40] = (250, 30, 30)
    return img


def cells(img: Image.Image, layout) -> np.ndarray:  # type: ignore[no-untyped-def]
    a = np.asarray(img)
    return np.stack(
        [
            np.stack([a[t:b, left:r] for left, t, r, b in (layout.box(i, j) for j in range(layout.cols))])
            for i in range(layout.rows)
        ]
    )


def test_grid_layout_rows_are_methods_and_columns_layers(picture: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    maps = [[rng.random((6, 8)) for _ in range(4)] for _ in range(3)]
    img, layout = draw_grid(picture, maps, ["gradcam", "gradcam++", "layercam"], [f"b{i}" for i in range(4)], cell=40)
    assert img.size == layout.size and (layout.rows, layout.cols) == (3, 4)
    assert (layout.cell_h, layout.cell_w) == (40, 53)  # the shorter side is `cell`, aspect kept
    wider, _ = draw_grid(
        picture, [r + r[:1] for r in maps], ["gradcam", "gradcam++", "layercam"], list("abcde"), cell=40
    )
    assert wider.width - img.width == layout.cell_w + GAP and wider.height == img.height
    taller, _ = draw_grid(picture, [*maps, maps[0]], ["a", "b", "c", "d"], [f"b{i}" for i in range(4)], cell=40)
    assert taller.height - img.height == layout.cell_h + GAP
    a = np.asarray(img)
    assert a[: layout.header_h].max() > 200  # column labels drawn
    assert a[layout.header_h :, : layout.label_w].max() > 200  # row labels drawn
    c = cells(img, layout)
    assert not np.array_equal(c[0, 0], c[1, 0]) and not np.array_equal(c[0, 0], c[0, 1])
    same, lay = draw_grid(picture, [maps[0], maps[0]], ["x", "y"], [f"b{i}" for i in range(4)], cell=40)
    c = cells(same, lay)
    assert np.array_equal(c[0], c[1])  # same maps, same cells
    with pytest.raises(UsageError):
        draw_grid(picture, maps, ["a", "b"], ["x"] * 4)


def test_library_grid_is_explain_then_draw(picture: np.ndarray) -> None:
    model = Small().eval()
    methods = ["gradcam", "gradcam++", "eigencam", "scorecam"]
    layers = ["block3_conv1", "block4_conv3", "block5_conv3"]
    img = layerscope.grid(model, picture, methods, layers=layers, cell=48, top_k=2)
    exps = [layerscope.explain(model, picture, layers, m, **({"top_k": 2} if m == "scorecam" else {})) for m in methods]
    target = int(exps[0].targets[0])
    assert all(int(e.targets[0]) == target for e in exps)
    maps = [[e.cams[name][0] for name in layers] for e in exps]
    title = f"Class: {exps[0].class_name(0)} (p = {exps[0].probabilities[0]:.2f})"
    ref, layout = draw_grid(exps[0].images[0], maps, methods, layers, title=title, cell=48)
    assert img.size == layout.size == ref.size
    assert np.array_equal(np.asarray(img), np.asarray(ref))
    c = cells(img, layout)
    for i in range(1, len(methods)):
        assert not np.array_equal(c[0], c[i]), methods[i]
    with pytest.raises(UsageError, match="no chosen method has the option"):
        layerscope.grid(model, picture, ["gradcam"], layers=layers, top_k=2)
    with pytest.raises(UsageError, match="unknown CAM method"):
        layerscope.grid(model, picture, "gradcam,nope", layers=layers)


def test_grid_keeps_one_target_for_every_method(picture: np.ndarray) -> None:
    model = Small().eval()
    img = layerscope.grid(model, picture, "gradcam,layercam", layers="block5_conv3", target=2, cell=32)
    exp = layerscope.explain(model, picture, "block5_conv3", "layercam", target=2)
    _, layout = draw_grid(exp.images[0], [[exp.cams["block5_conv3"][0]]] * 2, ["gradcam", "layercam"], ["block5_conv3"],
                          title=f"Class: {exp.class_name(0)} (p = {exp.probabilities[0]:.2f})", cell=32)  # fmt: skip
    assert img.size == layout.size


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def image_file(tmp_path: Path, picture: np.ndarray) -> Path:
    p = tmp_path / "pic.png"
    Image.fromarray(picture).save(p)
    return p


VGG = ("--model", "vgg16", "--weights", "random")


def test_cli_grid_writes_a_png_and_refuses_to_overwrite(
    image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.png"
    args = ("grid", str(image_file), *VGG, "--layers", "block4_conv3,block5_conv3", "--cell", "40", "-o", str(out))
    code, stdout, err = run_cli(capsys, *args, "--methods", "gradcam,eigencam,ablationcam", "--top-k", "1")
    assert code == 0, err
    assert "ablationcam: 2 forward passes (2 layers, 1 image)" in err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[1] > 3 * 40 and im.size[0] > 2 * 40
        size = im.size
    assert f"{size[0]}×{size[1]}" in stdout
    before = out.read_bytes()
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "already exists" in err and out.read_bytes() == before
    code, _, err = run_cli(capsys, *args, "--overwrite", "--methods", "gradcam")
    assert code == 0 and out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "pic.png"]  # no temporary left


def test_cli_method_option_errors(image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = ("grid", str(image_file), *VGG)
    code, _, err = run_cli(
        capsys, *grid, "--methods", "gradcam,layercam", "--top-k", "2", "-o", str(tmp_path / "g.png")
    )
    assert code == 2 and "--top-k applies to perturbation methods only" in err
    code, _, err = run_cli(capsys, *grid, "--methods", "gradcam,bogus", "-o", str(tmp_path / "g.png"))
    assert code == 2 and "unknown CAM method 'bogus'" in err and "scorecam" in err
    code, _, err = run_cli(capsys, *grid, "-o", str(tmp_path / "g.gif"))
    assert code == 2 and ".png" in err
    code, _, err = run_cli(capsys, "tour", str(image_file), *VGG, "--perturb-batch", "4", "-o", str(tmp_path / "t.gif"))
    assert code == 2 and "--perturb-batch applies to perturbation methods only" in err
    assert err.count("\n") == 1 and not list(tmp_path.glob("g.*")) and not list(tmp_path.glob("t.*"))


def test_cli_tour_with_a_perturbation_method(
    image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.gif"
    code, stdout, err = run_cli(
        capsys, "tour", str(image_file), *VGG, "--method", "scorecam", "--top-k", "1", "--perturb-batch", "1",
        "--layers", "block5_*", "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "scorecam: 3 forward passes (3 layers, 1 image)" in err and "3 layers, scorecam" in stdout
    with Image.open(out) as im:
        assert im.n_frames == 3


def test_cli_methods_lists_cost_gradients_and_frameworks(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    methods, _, fusions = out.partition("\n\n")
    rows = {line.split()[0]: line for line in methods.splitlines()}
    assert list(rows) == layerscope.list_methods()
    assert fusions.startswith("fusion (") and all(
        f"{name} " in fusions and "no extra pass" in fusions for name in ("layercam-fusion", "refinecam", "polycam")
    )
    assert "1 forward + 1 backward" in rows["layercam"] and "; gradients]" in rows["layercam"]
    assert "no gradients]" in rows["eigencam"]
    for name in ("scorecam", "ablationcam", "guided-backprop", "guided-gradcam"):
        assert "PyTorch only" in rows[name], name
    assert "per image, layer and channel" in rows["scorecam"]


def test_preprocess_size_reaches_the_grid(picture: np.ndarray) -> None:
    model = Small().eval()
    img = layerscope.grid(
        model, picture, "gradcam", layers="block1_conv1", cell=30, preprocess=Preprocess(size=(32, 32))
    )
    assert img.height > 30
