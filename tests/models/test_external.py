"""Other people's models by name (``layerscope.models.external``): ``module:callable``, and
``torchvision:`` / ``timm:`` through small local packages standing in for those (neither can be
imported here), ``hf:`` with the real transformers on a tiny local ViT (no network)."""

from __future__ import annotations

import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import layerscope
from layerscope.errors import UsageError, WeightsError
from layerscope.info import model_info
from layerscope.inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from layerscope.models import build_for_listing

TINY_NET = """
import torch
from torch import nn


class TinyResNetLike(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        for i in range(1, 5):
            setattr(self, f"layer{i}", nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
        self.register_buffer("scale", torch.full((1,), 2.0), persistent=False)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        x = self.conv1(x) * self.scale
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


@pytest.fixture
def fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``torchvision`` and ``timm`` stand-ins on ``sys.path``, removed afterwards."""
    root = tmp_path / "site"
    _write(
        root,
        {
            "tinynet.py": TINY_NET,
            "torchvision/__init__.py": "from torchvision import models\n",
            "torchvision/models/__init__.py": """
                import urllib.error
                from tinynet import TinyResNetLike

                PRETRAINED = {}  # a test puts a state dict here to stand for the downloaded file

                class Transforms:
                    crop_size = [40]
                    resize_size = [44]
                    mean = [0.4, 0.5, 0.6]
                    std = [0.2, 0.25, 0.3]

                class Weights:
                    url = "https://download.pytorch.org/models/tiny_resnet-0123abcd.pth"
                    meta = {"categories": ["cat", "dog", "fish"]}

                    def transforms(self):
                        return Transforms()

                class TinyWeights:
                    DEFAULT = Weights()

                def list_models():
                    return ["tiny_resnet"]

                def get_model_weights(name):
                    return TinyWeights

                def get_model(name, weights=None):
                    model = TinyResNetLike()
                    if weights is not None:
                        if not PRETRAINED:
                            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
                        model.load_state_dict(PRETRAINED)
                    return model
            """,
            "timm/__init__.py": """
                import urllib.error
                from timm import data
                from tinynet import TinyResNetLike

                def is_model(name):
                    return name == "tiny_vit"

                def list_models():
                    return ["tiny_vit"]

                def create_model(name, pretrained=False):
                    if pretrained:
                        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
                    return TinyResNetLike(classes=1000)
            """,
            "timm/data/__init__.py": """
                def resolve_data_config(args, model=None):
                    return {"input_size": (3, 40, 48), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
            """,
        },
    )
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in list(sys.modules):
        if name.split(".")[0] in ("torchvision", "timm", "tinynet", "user_models"):
            del sys.modules[name]


# ---------------------------------------------------------------- module:callable


def test_module_callable_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "project"
    _write(
        work,
        {
            "user_models.py": TINY_NET
            + """

def build():
    torch.manual_seed(3)
    return TinyResNetLike()

NOT_CALLABLE = 3

def broken():
    raise RuntimeError("no GPU here")
"""
        },
    )
    monkeypatch.chdir(work)
    assert str(work) not in sys.path
    try:
        model = layerscope.load_model("user_models:build", size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        assert str(work) not in sys.path  # searched, not left behind
        assert type(model).__name__ == "TinyResNetLike" and not model.training
        info = model_info(model)
        assert info.name == "user_models:build" and info.preprocess == Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3)
        exp = layerscope.explain(model, torch.randn(1, 3, 32, 32))
        assert exp.layers == ["conv1", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]  # every conv, in order
        # weights=PATH: a state dict, checked
        torch.save({k: v + 1 for k, v in model.state_dict().items()}, tmp_path / "w.pth")
        loaded = layerscope.load_model("user_models:build", weights=str(tmp_path / "w.pth"))
        assert torch.equal(loaded.fc.bias, model.fc.bias + 1)
        torch.save({"fc.weight": torch.zeros(5, 4)}, tmp_path / "bad.pth")
        with pytest.raises(WeightsError) as e:
            layerscope.load_model("user_models:build", weights=str(tmp_path / "bad.pth"))
        assert "fc.weight: file (5, 4) vs model (3, 4)" in str(e.value) and "missing keys: conv1.weight" in str(e.value)
        with pytest.raises(UsageError, match=r"no 'biuld': unknown name 'biuld'\. Did you mean build\?"):
            layerscope.load_model("user_models:biuld")
        with pytest.raises(UsageError, match="not something to call"):
            layerscope.load_model("user_models:NOT_CALLABLE")
        with pytest.raises(UsageError, match="calling broken\\(\\) failed: RuntimeError: no GPU here"):
            layerscope.load_model("user_models:broken")
        with pytest.raises(UsageError, match="no module named 'nowhere_models'"):
            layerscope.load_model("nowhere_models:build")
        with pytest.raises(UsageError, match="--weights random does not apply"):
            layerscope.load_model("user_models:build", weights="random")
    finally:
        sys.modules.pop("user_models", None)


def test_callable_returning_something_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"not_a_model_mod.py": "def build():\n    return [1, 2]\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(UsageError, match=r"returned a list, not a torch\.nn\.Module"):
            layerscope.load_model("not_a_model_mod:build")
    finally:
        sys.modules.pop("not_a_model_mod", None)


# ---------------------------------------------------------------- torchvision / timm stand-ins


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision → ImportError
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    for spec, pip in (
        ("torchvision:resnet50", "torchvision"),
        ("timm:vit_base_patch16_224", "timm"),
        ("hf:a/b", "transformers"),
    ):
        with pytest.raises(UsageError, match=f"pip install {pip}"):
            layerscope.load_model(spec)


def test_torchvision_pretrained_random_file_and_offline(fake_packages: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as e:
        layerscope.load_model("torchvision:tiny_resnet")
    msg = str(e.value)
    assert "Offline?" in msg and "--weights PATH" in msg and "tiny_resnet-0123abcd.pth" in msg and "\n" not in msg
    assert "Temporary failure in name resolution" in msg
    with pytest.raises(UsageError, match="Did you mean tiny_resnet"):
        layerscope.load_model("torchvision:tiny_resnt")

    tv = sys.modules["torchvision.models"]
    source = tv.TinyResNetLike()
    tv.PRETRAINED.update(source.state_dict())
    model = layerscope.load_model("torchvision:tiny_resnet")
    assert torch.equal(model.fc.weight, source.fc.weight)
    info = model_info(model)
    assert info.class_names == ("cat", "dog", "fish") and info.output == "logits"
    assert info.preprocess == Preprocess((40, 40), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    # ResNet-style (layer1 … layer4 stages): each stage's children, as the built-in resnet50
    assert list(info.layers) == [f"layer{i}.{k}" for i in range(1, 5) for k in range(2)]

    a = layerscope.load_model("torchvision:tiny_resnet", "random", seed=5)
    state = torch.random.get_rng_state()
    b = layerscope.load_model("torchvision:tiny_resnet", "random", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global generator left alone
    assert torch.equal(a.fc.weight, b.fc.weight) and "RANDOM" in model_info(a).warning

    torch.save(source.state_dict(), tmp_path / "tv.pth")
    from_file = layerscope.load_model("torchvision:tiny_resnet", weights=str(tmp_path / "tv.pth"))
    assert torch.equal(from_file.fc.weight, source.fc.weight)
    assert float(from_file.scale) == 2.0  # a non-persistent buffer keeps the constructor's value
    listing = build_for_listing("torchvision:tiny_resnet")
    assert float(listing.fc.weight.detach().abs().max()) == 0.0


def test_timm_data_config_and_offline(fake_packages: Path) -> None:
    with pytest.raises(WeightsError, match=r"timm's pretrained tiny_vit .*couldn't connect.*Offline"):
        layerscope.load_model("timm:tiny_vit")
    with pytest.raises(UsageError, match="unknown timm model"):
        layerscope.load_model("timm:huge_vit")
    model = layerscope.load_model("timm:tiny_vit", "random", size=(64, 64))
    info = model_info(model)
    assert info.class_names is not None and len(info.class_names) == 1000 and info.class_names[0] == "tench"
    assert info.preprocess == Preprocess((64, 64), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # data config, size overridden
    assert model_info(layerscope.load_model("timm:tiny_vit", "random")).preprocess.size == (40, 48)


# ---------------------------------------------------------------- Hugging Face (real transformers, local folder)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label={0: "apple", 1: "pear", 2: "plum"},
        label2id={"apple": 0, "pear": 1, "plum": 2},
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]
    ).save_pretrained(folder)
    return folder


def test_hf_local_folder_random_and_file(hf_folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    transformers = pytest.importorskip("transformers")
    saved = transformers.ViTForImageClassification.from_pretrained(hf_folder).eval()
    capfd.readouterr()
    model = layerscope.load_model(f"hf:{hf_folder}")
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar before our output
    assert transformers.utils.logging.is_progress_bar_enabled()  # and the setting is restored
    info = model_info(model)
    assert info.class_names == ("apple", "pear", "plum")
    assert info.preprocess == Preprocess((32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, saved(x).logits)
    a = layerscope.load_model(f"hf:{hf_folder}", "random", seed=1)
    b = layerscope.load_model(f"hf:{hf_folder}", "random", seed=1)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, saved.classifier.weight)
    torch.save(saved.state_dict(), tmp_path / "vit.pth")
    c = layerscope.load_model(f"hf:{hf_folder}", weights=str(tmp_path / "vit.pth"))
    with torch.no_grad():
        torch.testing.assert_close(c(x).logits, saved(x).logits)


def test_hf_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(WeightsError) as e:
        layerscope.load_model("hf:nobody-here/not-a-cached-model")
    msg = str(e.value)
    assert "\n" not in msg and "offline?" in msg and "hf:/path/to/folder" in msg
    assert "state dict" not in msg  # not the fix for a model that is not there


def test_hf_preprocess_without_a_processor_file(hf_folder: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(hf_folder, bare)
    (bare / "preprocessor_config.json").unlink()
    info = model_info(layerscope.load_model(f"hf:{bare}", "random"))
    assert info.preprocess == Preprocess((32, 32), IMAGENET_MEAN, IMAGENET_STD)  # the config's image_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(info.preprocess([np.zeros((8, 8, 3), np.uint8)])).all()
