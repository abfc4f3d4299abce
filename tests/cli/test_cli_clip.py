"""The CLI on a CLIP folder (save_pretrained, with its tokenizer): ``tour --target-text``
end to end, its mistakes refused before any model is loaded, and ``layers``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from helpers_clip import LAYERS, clip_folder

pytest.importorskip("transformers")

EVIL = "</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clip_folder(tmp_path_factory.mktemp("clipcli"))


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    a = np.random.default_rng(0).integers(0, 60, (48, 48, 3)).astype(np.uint8)
    a[12:36, 12:36] = (210, 40, 40)
    Image.fromarray(a).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerscope.models

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(layerscope.models, "load_model", refuse)


def test_a_prompt_gives_the_gif_captioned_with_it(
    folder: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cat.gif"
    code, stdout, err = run_cli(
        capsys, "tour", str(photo), "--model", f"hf:{folder}", "--target-text", "a photo of a cat", "-o", str(out)
    )
    assert code == 0, err
    assert re.search(r'2 layers, gradcam, text "a photo of a cat" \(logit -?\d+\.\d+\)', stdout), stdout
    with Image.open(out) as gif:
        assert gif.n_frames == len(LAYERS)


def test_several_prompts_are_the_pages_prompt_switch_escaped(
    folder: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "page.html"
    args = ["tour", str(photo), "--model", f"hf:{folder}", "--target-text", "a cat", "--target-text", EVIL]
    code, stdout, err = run_cli(capsys, *args, "-o", str(out))
    assert code == 0, err
    assert '2 prompts ("a cat", "</script>' in stdout
    page = out.read_text("utf-8")
    assert "<img src=x" not in page and page.count("</script>") == page.count("<script")
    assert "<label>prompt <select" in page and "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    code, _, err = run_cli(capsys, *args, "-o", str(tmp_path / "two.gif"))
    assert code == 2 and "interactive page" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-text", "a cat"], "demo is not a CLIP model"),
        (["--model", "vgg16", "--target-text", "a cat"], "vgg16 is not a CLIP model"),
        (["--model", "hf:FOLDER", "--target-text", "  "], "a prompt is empty"),
        (["--model", "hf:FOLDER", "--target-text", "a cat", "--target", "3"], "not both"),
        (["--model", "hf:FOLDER", "--target-text", "a cat", "--method", "scorecam"], "gradient methods"),
        (
            ["--model", "hf:FOLDER", "--target-text", "a cat", "--method", "legrad"],
            "gradrollout and rollout, not legrad",
        ),
        (["--model", "hf:FOLDER"], "is a CLIP model (image and text towers): say what to explain with --target-text"),
    ],
)
def test_mistakes_are_refused_before_any_model_is_loaded(
    no_model: None,
    folder: Path,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    extra = [e.replace("FOLDER", str(folder)) for e in extra]
    code, _, err = run_cli(capsys, "tour", str(photo), *extra, "-o", str(tmp_path / "x.gif"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "x.gif").exists()


def test_layers_lists_the_vision_blocks(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run_cli(capsys, "layers", "--model", f"hf:{folder}")
    assert code == 0, err
    assert [line.split()[0] for line in stdout.splitlines()[1:]] == LAYERS
    assert all(line.split()[-1] == "17x16" for line in stdout.splitlines()[1:])
