"""The built-in models and safe weight loading."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import layerscope
from layerscope.errors import UsageError, WeightsError
from layerscope.info import model_info
from layerscope.inputs import Preprocess
from layerscope.models import imagenet_classes, registry, resnet, vgg, weights

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
    names = vgg.vgg16_layers()
    assert names == vgg.make_features()[1]
    assert len(names) == 13
    for name, path in names.items():
        idx = int(path.split(".")[1])
        assert isinstance(model.features[idx], torch.nn.ReLU), name
        assert isinstance(model.features[idx - 1], torch.nn.Conv2d), name
    assert names["block5_conv3"] == "features.29"


def _no_layerscope_attributes(model: torch.nn.Module) -> bool:
    return not any(
        k.startswith("layerscope") or k == "class_names" for m in model.modules() for k in (*vars(m), *type(m).__dict__)
    )


def test_imagenet_class_names() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"


def test_random_weights_say_so() -> None:
    model = layerscope.load_model("vgg16-cifar10", weights="random")
    info = model_info(model)
    assert info is not None and info.name == "vgg16-cifar10"
    assert "RANDOM" in info.warning and info.note == "RANDOM WEIGHTS"
    assert _no_layerscope_attributes(model)
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
        assert model_info(m).warning is None and model_info(m).note is None
        for k, v in src.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k


def test_conv_base_only_file_warns_untrained_head(tmp_path: Path) -> None:
    base = {k: v for k, v in vgg.VGG16().state_dict().items() if k.startswith("features.")}
    torch.save(base, tmp_path / "base.pth")
    m = layerscope.load_model("vgg16-cifar10", weights=str(tmp_path / "base.pth"))
    assert "untrained" in model_info(m).warning and model_info(m).note == "untrained head"
    assert torch.equal(m.features[0].weight, base["features.0.weight"])


def test_pickled_whole_model_is_refused_in_one_clean_line(tmp_path: Path) -> None:
    torch.save(torch.nn.Conv2d(1, 1, 1), tmp_path / "whole.pth")
    with pytest.raises(WeightsError, match="refused") as e:
        weights.read_state_dict(tmp_path / "whole.pth")
    msg = str(e.value)
    assert "torch.nn.modules.conv.Conv2d" in msg and "model.state_dict()" in msg
    # neither torch's terminal colour codes nor its advice to load the file unsafely
    assert "\x1b" not in msg and "weights_only" not in msg and "\n" not in msg


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


def test_offline_imagenet_is_a_clear_error_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(weights, "VGG16_IMAGENET_URL", (tmp_path / "nowhere" / "vgg16-397923af.pth").as_uri())
    built: list[str] = []
    real = vgg.VGG16
    monkeypatch.setattr(vgg, "VGG16", lambda *a, **k: built.append("VGG16") or real(*a, **k))
    with pytest.raises(WeightsError, match="--weights random") as e:
        layerscope.load_model("vgg16", weights="imagenet")
    assert built == []  # the error came before the 138 M parameters were laid out
    assert "\n" not in str(e.value) and str(e.value).count("(") == str(e.value).count(")")


def test_imagenet_base_for_the_recipe_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = vgg.VGG16().state_dict()
    path = tmp_path / "vgg16-local.pth"
    torch.save(full, path)
    monkeypatch.setattr(weights, "download_torchvision", lambda url, timeout=30.0: path)
    m = layerscope.load_model("vgg16-cifar10", weights="imagenet")
    assert "untrained" in model_info(m).warning
    assert torch.equal(m.features[28].weight, full["features.28.weight"])
    m2 = layerscope.load_model("vgg16", weights="imagenet")
    assert model_info(m2).warning is None and torch.equal(m2.classifier[6].bias, full["classifier.6.bias"])


# ---------------------------------------------------------------- building without waste (issue 9 #2)


def _record_init_devices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every tensor torch's default initialisers touch, by device."""
    seen: list[str] = []
    for fn in ("kaiming_uniform_", "uniform_", "normal_", "zeros_", "ones_"):
        real = getattr(torch.nn.init, fn)

        def spy(*a: object, _real=real, **k: object) -> object:  # type: ignore[no-untyped-def]
            t = a[0] if a else k["tensor"]
            seen.append(t.device.type)  # type: ignore[union-attr]
            return _real(*a, **k)

        monkeypatch.setattr(torch.nn.init, fn, spy)
    return seen


def test_loading_weights_initialises_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = layerscope.load_model("vgg16-cifar10", weights="random", seed=4)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    seen = _record_init_devices(monkeypatch)
    calls: list[int] = []
    monkeypatch.setattr(vgg, "init_vgg_", lambda *a, **k: calls.append(1))
    m = layerscope.load_model("vgg16-cifar10", weights=str(tmp_path / "w.safetensors"))
    assert calls == [] and set(seen) <= {"meta"}  # no parameter initialised on a real device
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_random_weights_are_initialised_once_and_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_init_devices(monkeypatch)
    calls: list[int] = []
    real = vgg.init_vgg_
    monkeypatch.setattr(vgg, "init_vgg_", lambda m, seed=0: calls.append(seed) or real(m, seed))
    a = layerscope.load_model("vgg16-cifar10", weights="random", seed=7)
    assert calls == [7] and set(seen) <= {"meta"}
    b = layerscope.load_model("vgg16-cifar10", weights="random", seed=7)
    c = layerscope.load_model("vgg16-cifar10", weights="random", seed=8)
    assert torch.equal(a.head[2].weight, b.head[2].weight) and not torch.equal(a.head[2].weight, c.head[2].weight)


def test_build_for_listing_needs_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*a: object, **k: object) -> None:
        raise AssertionError("nothing may be downloaded or read")

    monkeypatch.setattr(weights, "download_torchvision", no_download)
    monkeypatch.setattr(weights, "read_state_dict", no_download)
    model = registry.build_for_listing("vgg16-cifar10")
    assert model_info(model).layers == vgg.vgg16_layers()
    assert all(float(p.detach().abs().max()) == 0.0 for p in model.parameters())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    meta = registry.build_for_listing("resnet50", device="meta")
    assert all(p.is_meta for p in meta.parameters())
    with torch.no_grad():
        assert meta.layer4(torch.zeros(1, 1024, 14, 14, device="meta")).shape == (1, 2048, 7, 7)


def test_preprocess_overrides_and_model_info() -> None:
    m = layerscope.load_model("demo", size=(64, 48), mean=(0.1, 0.2, 0.3))
    info = model_info(m)
    assert info.note == "demo model (10 synthetic shapes)" and info.output == "logits"
    assert info.preprocess == Preprocess((64, 48), (0.1, 0.2, 0.3), (0.25, 0.25, 0.25))
    assert (
        model_info(layerscope.load_model("demo", "random")).note == "demo model (10 synthetic shapes), RANDOM WEIGHTS"
    )
    with pytest.raises(UsageError, match="no 'imagenet' weights"):
        layerscope.load_model("demo", weights="imagenet")
    with pytest.raises(UsageError, match="PyTorch only"):
        layerscope.load_model("demo", framework="keras")
    with pytest.raises(UsageError, match="size"):
        layerscope.load_model("demo", size=(0, 3))


# ---------------------------------------------------------------- ResNet-50 (issue 11 #2)


def _torchvision_resnet50_keys() -> list[str]:
    """torchvision's ``resnet50().state_dict()`` keys, written out from its layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *(f"bn1.{p}" for p in bn)]
    for i, n in enumerate((3, 4, 6, 3), start=1):
        for b in range(n):
            for k in (1, 2, 3):
                keys += [f"layer{i}.{b}.conv{k}.weight", *(f"layer{i}.{b}.bn{k}.{p}" for p in bn)]
            if b == 0:
                keys += [f"layer{i}.0.downsample.0.weight", *(f"layer{i}.0.downsample.1.{p}" for p in bn)]
    return [*keys, "fc.weight", "fc.bias"]


def test_resnet50_has_torchvision_keys_shapes_and_layers() -> None:
    model = layerscope.load_model("resnet50", weights="random")
    sd = model.state_dict()
    assert list(sd) == _torchvision_resnet50_keys()
    assert sum(v.numel() for k, v in model.named_parameters()) == 25_557_032  # torchvision's num_params
    assert tuple(sd["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)  # V1.5: the stride is on the 3×3
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    info = model_info(model)
    assert list(info.layers) == [f"layer{i}.{b}" for i, n in enumerate((3, 4, 6, 3), 1) for b in range(n)]
    assert info.class_names == imagenet_classes() and info.note == "RANDOM WEIGHTS"


def test_resnet50_maps_equal_captum_at_every_block() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = layerscope.load_model("resnet50", weights="random", seed=1)
    with torch.no_grad():  # non-trivial batch-norm statistics, so blocks differ
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        exp = layerscope.explain(model, x)
    assert exp.layers == list(resnet.resnet50_layers())
    target = torch.from_numpy(exp.targets)
    for name in exp.layers:
        ref = captum_attr.LayerGradCam(model, model.get_submodule(name)).attribute(
            x, target=target, relu_attributions=True
        )
        ref = ref[:, 0].detach().numpy()
        ours = exp.cams[name]
        assert ours.shape == ref.shape, name
        for a, b in zip(ours, ref, strict=True):
            a = (a - a.min()) / max(a.max() - a.min(), 1e-30)
            b = (b - b.min()) / max(b.max() - b.min(), 1e-30)
            assert abs(a - b).max() <= 1e-4, name


def test_dependency_floors_are_safe() -> None:
    """torch ≥ 2.10 (weights_only bypasses CVE-2025-32434, CVE-2026-24747) and Keras ≥ 3.12.1
    without 3.13.x (safe_mode bypasses up to CVE-2026-1462): no vulnerable version allowed."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    extras = tomllib.loads(text)["project"]["optional-dependencies"]
    specs = {req.name: req.specifier for group in ("torch", "keras") for req in map(Requirement, extras[group])}
    assert not any(v in specs["torch"] for v in ("2.1.0", "2.5.1", "2.6.0", "2.9.1"))
    assert "2.10.0" in specs["torch"]
    assert not any(v in specs["keras"] for v in ("3.0.0", "3.8.0", "3.11.2", "3.11.3", "3.12.0", "3.13.0", "3.13.1"))
    assert "3.12.1" in specs["keras"] and "3.15.1" in specs["keras"]


def test_a_preprocessed_tensor_is_drawn_over_the_true_picture() -> None:
    """Issue 9 #7 for torch: a tensor made by the model's own preprocessing is shown exactly."""
    from layerscope.models import demo

    model = layerscope.load_model("demo")
    image = np.asarray(demo.sample_image()[0])
    x = model_info(model).preprocess([image])
    exp = layerscope.explain(model, torch.from_numpy(x), layers="block5_conv3")
    np.testing.assert_array_equal(exp.images[0], image)
