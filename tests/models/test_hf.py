"""``hf:`` models: no remote code without --trust-model (and never a prompt on stdin), a fast
offline error, a folder that does not exist, a capped config size, the expected input size."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import layerscope
from layerscope.errors import UsageError, WeightsError
from layerscope.info import ModelInfo, model_info
from layerscope.inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocess

transformers = pytest.importorskip("transformers")


def _remote_code_folder(root: Path) -> tuple[Path, Path]:
    """A save_pretrained-like folder whose config asks for its own code, which would write a marker."""
    folder = root / "remote"
    folder.mkdir()
    marker = root / "REMOTE_CODE_RAN"
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    (folder / "configuration_evil.py").write_text(
        code + "from transformers import PretrainedConfig\n\nclass EvilConfig(PretrainedConfig):\n"
        "    model_type = 'evil'\n"
    )
    (folder / "modeling_evil.py").write_text(code)
    auto_map = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForImageClassification": "modeling_evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    return folder, marker


def test_remote_code_is_refused_never_prompted_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, marker = _remote_code_folder(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a prompt's answer, were one read
    for weights in (None, "random"):
        with pytest.raises(UsageError) as e:
            layerscope.load_model(f"hf:{folder}", weights)
        msg = str(e.value)
        assert "auto_map" in msg and "modeling_evil.EvilModel" in msg and "--trust-model" in msg
    with pytest.raises(UsageError, match="auto_map"):
        layerscope.models.build_for_listing(f"hf:{folder}")
    assert sys.stdin.read() == "y\n"  # nothing was read from stdin
    assert not marker.exists()


def test_remote_code_refused_from_the_command_line_with_y_on_stdin(tmp_path: Path) -> None:
    folder, marker = _remote_code_folder(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "layerscope", "layers", "--model", f"hf:{folder}"],
        input="y\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0
    assert "auto_map" in done.stderr and "--trust-model" in done.stderr
    assert "[y/N]" not in done.stdout + done.stderr
    assert not marker.exists()


def test_trust_model_lets_the_code_run(tmp_path: Path) -> None:
    folder, marker = _remote_code_folder(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - the toy code defines no model; what matters is that it ran
        layerscope.load_model(f"hf:{folder}", "random", trust_model=True)
    assert marker.exists()


def test_a_folder_that_does_not_exist_says_so() -> None:
    for spec in ("hf:/nonexistent", "hf:./no/such/folder"):
        with pytest.raises(UsageError, match="no such folder") as e:
            layerscope.load_model(spec)
        assert "Repo id" not in str(e.value)


def test_offline_fails_once_fast_and_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    from layerscope.models import hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(hf, "HUB_ADDRESS", ("127.0.0.1", 9))  # nothing listens: unreachable at once
    monkeypatch.setattr(hf, "_OFFLINE", None)
    start = time.monotonic()
    with pytest.raises(WeightsError) as e:
        layerscope.load_model("hf:nobody-here/not-a-cached-model")
    assert time.monotonic() - start < 3
    msg = str(e.value)
    assert "\n" not in msg and "offline?" in msg and "hf:/path/to/folder" in msg and "state dict" not in msg


def _vit_folder(root: Path, image_size: int, patch_size: int) -> Path:
    folder = root / f"vit{image_size}"
    config = transformers.ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        num_labels=2,
    )
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return folder


def test_a_hostile_image_size_is_capped_and_says_so(tmp_path: Path) -> None:
    folder = _vit_folder(tmp_path, 3000, 300)
    with pytest.warns(UserWarning, match=r"asks for 3000×3000 input.*cap of 1024.*--size 3000"):
        info = model_info(layerscope.load_model(f"hf:{folder}", "random"))
    assert info.preprocess == Preprocess((1024, 1024), IMAGENET_MEAN, IMAGENET_STD)
    assert info.input_size == (3000, 3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for explicitly: no warning, the model's own size
        info = model_info(layerscope.load_model(f"hf:{folder}", "random", size=3000))
    assert info.preprocess.size == (3000, 3000)


def test_the_expected_input_size_is_on_the_info(tmp_path: Path) -> None:
    import torch

    folder = _vit_folder(tmp_path, 64, 16)
    model = layerscope.load_model(f"hf:{folder}", "random", size=96)
    info = model_info(model)
    assert info.input_size == (64, 64) and info.preprocess.size == (96, 96)
    assert info.size_hint() == "this model expects 64×64 input: --size 64"
    with pytest.raises(ValueError, match="64"):  # what the hint explains
        model(torch.zeros(1, 3, 96, 96))
    assert ModelInfo(input_size=(64, 48)).size_hint() == "this model expects 64×48 input: --size 64 48"
    assert ModelInfo().size_hint() is None


def test_model_info_repr_is_short() -> None:
    info = layerscope.models.get_entry("vgg16").info()
    text = repr(info)
    assert "<1000 names: 'tench', 'goldfish', 'great white shark', …>" in text
    assert "<13 layers: block1_conv1, block1_conv2, block2_conv1, …>" in text
    assert len(text) < 400
    assert repr(ModelInfo(name="x", class_names=("a", "b"))) == "ModelInfo(name='x', class_names=<2 names: 'a', 'b'>)"


def test_a_clip_folder_loads_whole_with_its_vision_size_and_tokenizer(tmp_path: Path) -> None:
    from helpers_clip import clip_folder
    from layerscope.models.hf import is_dual_encoder

    folder = clip_folder(tmp_path)
    assert is_dual_encoder(str(folder)) is True
    assert is_dual_encoder(str(_vit_folder(tmp_path, 32, 8))) is False
    model = layerscope.load_model(f"hf:{folder}")
    info = model_info(model)
    assert type(model).__name__ == "CLIPModel"  # not CLIPForImageClassification with a random head
    assert info.input_size == (32, 32) and info.preprocess.size == (32, 32)
    assert repr(info.tokenizer) == f"<tokenizer of hf:{folder}>"
    assert info.tokenizer(["a cat"], return_tensors="pt")["input_ids"].shape == (1, 6)  # bos, a, c a t, eos
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    bare = model_info(layerscope.load_model(f"hf:{folder}"))
    with pytest.raises(UsageError, match="cannot load its tokenizer"):
        bare.tokenizer(["a cat"])
