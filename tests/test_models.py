"""The built-in models and safe weight loading."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import layerscope
from layerscope.errors import UsageError, WeightsError
from layerscope.models import imagenet_classes, vgg, weights

TORCHVISION_VGG16_KEYS = [
    f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ("weight", "bias")
] + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


def test_vgg16_has_torchvision_keys_and_shapes() -> None:
    sd = vgg.VGG16().state_dict()
    assert list(sd) == TORCHVISION_VGG16_KEYS
    assert tuple(sd["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(sd["classifier.6.weight"].shape) == (1000, 4096)
    assert sum(v.numel() for v in sd.values()) == 138_357_544  # torchvision's num_params


def test_friendly_names_point_at_the_relu_after_each_conv() -> None:
    model = vgg.VGG16()
    assert len(model.layerscope_aliases) == 13
    for name, path in model.layerscope_aliases.items():
        idx = int(path.split(".")[1])
        assert isinstance(model.features[idx], torch.nn.ReLU), name
        assert isinstance(model.features[idx - 1], torch.nn.Conv2d), name
    assert model.layerscope_aliases["block5_conv3"] == "features.29"


def test_imagenet_class_names() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"


def test_random_weights_say_so() -> None:
    model = layerscope.load_model("vgg16-cifar10", weights="random")
    assert "RANDOM" in model.layerscope_warning
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        layerscope.explain(model, torch.randn(1, 3, 32, 32), layers="block5_conv3")
    assert any("RANDOM" in str(x.message) for x in w)
    with pytest.raises(UsageError, match="vgg16"):
        layerscope.load_model("vgg61")


def test_recipe_model_outputs_probabilities() -> None:
    model = layerscope.load_model("vgg16-cifar10", weights="random")
    assert [n for n, _ in model.head.named_children()] == ["0", "1", "2"]
    x = torch.randn(2, 3, 32, 32)
    p = model(x)
    assert p.shape == (2, 10) and torch.allclose(p.sum(1), torch.ones(2))
    exp = layerscope.explain(model, x, layers="block5_conv3")
    # The score explained is the probability itself, not a softmax of it.
    torch.testing.assert_close(torch.from_numpy(exp.probabilities), p.max(1).values.detach())
    assert exp.class_names[0] == "airplane"


def test_local_pth_and_safetensors_roundtrip(tmp_path: Path) -> None:
    src = layerscope.load_model("vgg16-cifar10", weights="random", seed=3)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        m = layerscope.load_model("vgg16-cifar10", weights=str(tmp_path / name))
        assert m.layerscope_warning is None
        for k, v in src.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k


def test_conv_base_only_file_warns_untrained_head(tmp_path: Path) -> None:
    base = {k: v for k, v in vgg.VGG16().state_dict().items() if k.startswith("features.")}
    torch.save(base, tmp_path / "base.pth")
    m = layerscope.load_model("vgg16-cifar10", weights=str(tmp_path / "base.pth"))
    assert "untrained" in m.layerscope_warning
    assert torch.equal(m.features[0].weight, base["features.0.weight"])


def test_pickled_whole_model_is_refused(tmp_path: Path) -> None:
    torch.save(torch.nn.Conv2d(1, 1, 1), tmp_path / "whole.pth")
    with pytest.raises(WeightsError, match="refused"):
        weights.read_state_dict(tmp_path / "whole.pth")


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {EVIL_MARK}",))


EVIL_MARK = Path("/tmp/layerscope-test-evil-ran")


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    EVIL_MARK.unlink(missing_ok=True)
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"features.0.weight": Evil()}, f)
    with pytest.raises(WeightsError, match="refused"):
        layerscope.load_model("vgg16", weights=str(p))
    assert not EVIL_MARK.exists()


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    sd = vgg.VGG16().state_dict()
    sd["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    sd["extra.weight"] = torch.zeros(1)
    del sd["classifier.6.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        layerscope.load_model("vgg16", weights=str(tmp_path / "bad.pth"))
    msg = str(e.value)
    assert "features.0.weight: file (32, 3, 3, 3) vs model (64, 3, 3, 3)" in msg
    assert "extra.weight" in msg and "classifier.6.bias" in msg
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="safetensors"):
        weights.read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="no such"):
        weights.read_state_dict(tmp_path / "missing.pth")


def _published_file(tmp_path: Path, stem: str) -> tuple[str, bytes]:
    """A small state-dict file named like torchvision's (``<stem>-<sha256[:8]>.pth``)."""
    src = tmp_path / "src.pth"
    torch.save({"w": torch.arange(4.0)}, src)
    data = src.read_bytes()
    name = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    (served / name).write_bytes(data)
    return (served / name).as_uri(), data


def test_download_checks_hash_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    url, data = _published_file(tmp_path, "tiny")
    got = weights.download_torchvision(url)
    assert got.read_bytes() == data and got.parent == tmp_path / "hub" / "hub" / "checkpoints"
    Path(url[len("file://") :]).unlink()  # the cache answers from now on
    assert weights.download_torchvision(url) == got
    # A file whose content does not match the hash in its name is rejected.
    bad = tmp_path / "served" / "other-00000000.pth"
    bad.write_bytes(data)
    with pytest.raises(WeightsError, match="hash"):
        weights.download_torchvision(bad.as_uri())
    assert not (tmp_path / "hub" / "hub" / "checkpoints" / "other-00000000.pth").exists()


def test_offline_imagenet_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(weights, "VGG16_IMAGENET_URL", (tmp_path / "nowhere" / "vgg16-397923af.pth").as_uri())
    with pytest.raises(WeightsError, match="--weights random"):
        layerscope.load_model("vgg16", weights="imagenet")


def test_imagenet_base_for_the_recipe_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = vgg.VGG16().state_dict()
    path = tmp_path / "vgg16-local.pth"
    torch.save(full, path)
    monkeypatch.setattr(weights, "download_torchvision", lambda url, timeout=30.0: path)
    m = layerscope.load_model("vgg16-cifar10", weights="imagenet")
    assert "untrained" in m.layerscope_warning
    assert torch.equal(m.features[28].weight, full["features.28.weight"])
    m2 = layerscope.load_model("vgg16", weights="imagenet")
    assert m2.layerscope_warning is None and torch.equal(m2.classifier[6].bias, full["classifier.6.bias"])
