"""The Keras recipe end to end, offline: generated CIFAR-10 tarball, random VGG16 weights in
local files, the one-command recipe, the untrained-head warning, training the head, and the
safety checks (Lambda layers, weights that do not fit)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # a Keras backend is fixed when keras is imported

import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers_cifar10 import write_tarball

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")
if not keras.__version__.startswith("3"):  # pragma: no cover
    pytest.skip("Keras 3 needed", allow_module_level=True)
# Keras' own numpy conversions on the torch backend warn about numpy 2's copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from keras import layers  # noqa: E402
from PIL import Image  # noqa: E402

import layerscope  # noqa: E402
from layerscope import cli, recipe  # noqa: E402
from layerscope.datasets import cifar10  # noqa: E402
from layerscope.errors import UsageError, WeightsError  # noqa: E402
from layerscope.info import model_info  # noqa: E402
from layerscope.inputs import CaffePreprocess, caffe_preprocess  # noqa: E402
from layerscope.models import keras_zoo  # noqa: E402

VGG_NAMES = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


def write_legacy_h5(model: keras.Model, path: Path, shrink: str | None = None) -> Path:
    """Weights in Keras' legacy HDF5 layout, as keras.applications publishes them
    (``layer_names``; a group per layer with ``weight_names``). ``shrink`` halves the output
    channels of that layer, for a file that does not fit."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}_{'W' if w.ndim > 1 else 'b'}_1:0" for w in layer.get_weights()]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.get_weights(), strict=True):
                if layer.name == shrink:
                    w = w[..., : w.shape[-1] // 2]
                g.create_dataset(n, data=w)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keras_recipe")
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    keras_zoo.init_random_(base, seed=5)
    rng = np.random.default_rng(6)
    for layer in base.layers:  # random biases, so no layer's map is trivially flat
        if layer.weights:
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.05, b.shape).astype(np.float32)])
    return {
        "notop": write_legacy_h5(base, d / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        "bad": write_legacy_h5(base, d / "bad_notop.h5", shrink="block3_conv2"),
        "cifar": write_tarball(d / cifar10.TARBALL, per_class=2),
        "dir": d,
    }


def test_caffe_preprocess_is_keras_preprocess_input() -> None:
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    want = np.asarray(keras.applications.vgg16.preprocess_input(x.copy()))
    np.testing.assert_allclose(caffe_preprocess(x), want, rtol=1e-6, atol=1e-4)
    img = x[0].astype(np.uint8)
    np.testing.assert_allclose(CaffePreprocess((8, 8))([img])[0], want[0], atol=1e-4)


def test_legacy_notop_file_loads_into_the_base_and_warns(files: dict[str, Path]) -> None:
    model = layerscope.load_model("vgg16-cifar10", files["notop"], framework="keras", size=32)
    with h5py.File(files["notop"]) as f:
        np.testing.assert_array_equal(
            model.get_layer("vgg16").get_layer("block4_conv2").get_weights()[0],
            f["block4_conv2"]["block4_conv2_W_1:0"][()],
        )
    with pytest.warns(UserWarning, match="head of vgg16-cifar10 is untrained"):
        exp = layerscope.explain(model, np.zeros((32, 32, 3), np.uint8))
    assert exp.layers == VGG_NAMES and exp.shapes["block5_conv3"] == (2, 2, 512)


def test_weights_that_do_not_fit_name_layer_and_shapes(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as e:
        layerscope.load_model("vgg16-cifar10", files["bad"], framework="keras", size=32)
    msg = str(e.value)
    assert "block3_conv2" in msg and "(3, 3, 256, 128)" in msg and "(3, 3, 256, 256)" in msg
    small_head = keras_zoo.build_recipe((32, 32, 3), hidden=8)
    keras_zoo.save_weights(small_head, tmp_path / "small.weights.h5")
    with pytest.raises(WeightsError, match=r"layer dense: file \(512, 8\) \+ \(8,\) vs model \(512, 1024\)"):
        layerscope.load_model("vgg16-cifar10", tmp_path / "small.weights.h5", framework="keras", size=32)
    with pytest.raises(WeightsError, match="no such weights file"):
        layerscope.load_model("vgg16-cifar10", tmp_path / "missing.h5", framework="keras", size=32)


def test_full_weights_round_trip_and_torch_state_dict(files: dict[str, Path], tmp_path: Path) -> None:
    model = layerscope.load_model("vgg16-cifar10", files["notop"], framework="keras", size=32)
    stale = tmp_path / ".full.weights.h5.killed.part.weights.h5"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (0, 0))
    keras_zoo.save_weights(model, tmp_path / "full.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.weights.h5"]  # atomic: the stale part is gone
    with pytest.raises(Exception, match="already exists"):
        keras_zoo.save_weights(model, tmp_path / "full.weights.h5")
    again = layerscope.load_model("vgg16-cifar10", tmp_path / "full.weights.h5", framework="keras", size=32)
    assert model_info(again).warning is None
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    tm = layerscope.load_model("vgg16-cifar10", weights="random")
    save_file({k: v.numpy() for k, v in tm.state_dict().items()}, str(tmp_path / "torch.safetensors"))
    from_torch = layerscope.load_model("vgg16-cifar10", tmp_path / "torch.safetensors", framework="keras", size=32)
    assert model_info(from_torch).warning is None
    k = from_torch.get_layer("vgg16").get_layer("block2_conv1").get_weights()[0]
    np.testing.assert_array_equal(k, tm.features[5].weight.detach().numpy().transpose(2, 3, 1, 0))
    del torch


def test_lambda_layer_is_refused_unless_trusted(tmp_path: Path) -> None:
    inp = keras.Input((16, 16, 3))
    x = layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(WeightsError) as e:
        layerscope.load_model(str(path), framework="keras")
    assert "'double' is a Lambda layer" in str(e.value)
    assert "--trust-model" in str(e.value) and "trust_model=True" in str(e.value)
    model = layerscope.load_model(str(path), framework="keras", trust_model=True)
    from layerscope.inputs import Preprocess

    assert layerscope.explain(model, np.zeros((16, 16, 3), np.uint8), preprocess=Preprocess((16, 16))).layers == [
        "conv"
    ]


def test_safe_keras_file_loads(tmp_path: Path) -> None:
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "ok.keras"
    keras.Model(inp, out).save(path)
    assert [
        n for n, _ in layerscope.capture.keras.resolve_layers(layerscope.load_model(str(path), framework="keras"), None)
    ] == ["conv"]
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a readable Keras model file"):
        layerscope.load_model(str(bad), framework="keras")


def _frames(path: Path) -> tuple[int, list[int], int, tuple[int, int]]:
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        return im.n_frames, durations, im.info.get("loop"), im.size


def test_recipe_one_command(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from layerscope.render import drawing as render

    captions: list[list[str]] = []
    real_frame = render.frame

    def spy(overlay: np.ndarray, caption: list[str], *a: object, **k: object) -> Image.Image:
        captions.append(list(caption))
        return real_frame(overlay, caption, *a, **k)

    monkeypatch.setattr(render, "frame", spy)
    monkeypatch.chdir(files["dir"])
    argv = ["tour", "--framework", "keras", "--model", "vgg16-cifar10", "--weights", str(files["notop"])]
    argv += ["--cifar10", "0", "--cifar10-path", str(files["cifar"])]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "grad_cam.gif: 13 layers, gradcam" in out and "CIFAR-10 test image 0, labelled 'airplane'" in out
    assert "head of vgg16-cifar10 is untrained" in err
    n, durations, loop, size = _frames(files["dir"] / "grad_cam.gif")
    assert n == 13 and set(durations) == {500} and loop == 0
    assert size == (224 + 40, 224 + 100)  # 20 px margin, 100 px extra height
    assert captions[0] == ["Layer: block1_conv1, Output size: (224, 224, 64)"]
    assert captions[-1] == ["Layer: block5_conv3, Output size: (14, 14, 512)"]
    assert len({tuple(c) for c in captions}) == 13  # one caption per layer (a GIF draws each frame twice)
    # Refused without --overwrite; the file is untouched.
    assert cli.main(argv) == 1
    assert "already exists" in capsys.readouterr().err


def test_recipe_overlay_is_drawn_on_the_original_rgb_image(files: dict[str, Path]) -> None:
    model = layerscope.load_model("vgg16-cifar10", files["notop"], framework="keras", size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = recipe.explain_cifar10(4, weights=None, cifar10_path=files["cifar"], model=model)
    img, _, _ = cifar10.load_image(4, "test", files["cifar"])
    assert np.array_equal(exp.images[0], img)  # RGB uint8, not the BGR mean-subtracted input
    assert exp.options == {"guided_grads": True}


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)


def test_offline_without_weights_names_the_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    _offline(monkeypatch, tmp_path)
    code = cli.main(["tour", "--framework", "keras", "--model", "vgg16-cifar10", "-o", str(tmp_path / "never.gif")])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1 and err.count("\n") == 1, err
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err and "--weights PATH" in err
    assert "Name or service not known" in err  # the cause, whole (not cut mid-word)
    assert "Downloading data from" not in captured.out + err


def test_offline_error_comes_before_building(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from layerscope.models.keras_zoo import architecture

    _offline(monkeypatch, tmp_path)
    built: list[object] = []
    monkeypatch.setattr(architecture, "build_vgg16", lambda *a, **k: built.append(a))
    for name in ("vgg16", "vgg16-cifar10"):
        with pytest.raises(WeightsError, match="Offline"):
            layerscope.load_model(name, framework="keras")
    assert built == []


def test_a_cached_keras_file_is_used_without_network(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import shutil

    _offline(monkeypatch, tmp_path)
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    shutil.copy(files["notop"], cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.warns(UserWarning, match="untrained"):
        model = layerscope.load_model("vgg16-cifar10", framework="keras", size=32)
        layerscope.explain(model, np.zeros((32, 32, 3), np.uint8), layers="block5_conv3")
    assert model_info(model).note == "untrained head"


@pytest.mark.slow
def test_no_tensorflow_chatter_before_our_message(tmp_path: Path) -> None:
    """A fresh `layerscope` process on the TensorFlow backend, offline: TensorFlow's absl /
    CPU-feature start-up lines and Keras' "Downloading data from …" never appear, only
    layerscope's one line (the CLI quiets TensorFlow for its commands; the library itself
    leaves the environment alone)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(KERAS_BACKEND="tensorflow", KERAS_HOME=str(tmp_path), https_proxy="http://127.0.0.1:9")
    env.update(HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    argv = [sys.executable, "-m", "layerscope", "tour", "--framework", "keras", "--model", "vgg16-cifar10"]
    argv += ["--size", "32", "-o", str(tmp_path / "x.gif")]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.startswith("layerscope: error: cannot get Keras' VGG16 ImageNet weights"), r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and r.stdout == ""


def test_cli_usage_errors(files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["tour", "--framework", "keras", "--model", "demo", "-o", "x.gif"]) == 2
    assert "PyTorch only" in capsys.readouterr().err
    assert cli.main(["tour", "img.png", "--cifar10", "1", "-o", "x.gif"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["tour", "--model-file", "m.keras", "-o", "x.gif"]) == 2
    assert "--framework keras" in capsys.readouterr().err


def test_train_head_then_explain_without_warning(files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = files["dir"] / "trained.weights.h5"
    argv = ["train-head", "--framework", "keras", "--weights", str(files["notop"]), "--cifar10-path"]
    argv += [str(files["cifar"]), "--steps", "2", "--batch-size", "4", "--size", "32", "-o", str(out)]
    assert cli.main(argv) == 0
    assert "step 2/2: loss" in capsys.readouterr().out
    model = layerscope.load_model("vgg16-cifar10", out, framework="keras", size=32)
    base = layerscope.load_model("vgg16-cifar10", files["notop"], framework="keras", size=32)
    for a, b in zip(model.get_layer("vgg16").get_weights(), base.get_layer("vgg16").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the base stayed frozen
    head_changed = not np.array_equal(
        model.get_layer("dense").get_weights()[0], base.get_layer("dense").get_weights()[0]
    )
    assert head_changed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layerscope.explain(model, np.zeros((32, 32, 3), np.uint8), layers="block5_conv3")


def test_torch_recipe_with_cifar10(files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    weights = files["dir"] / "torch_recipe.safetensors"
    argv = ["train-head", "--framework", "torch", "--weights", "random", "--cifar10-path", str(files["cifar"])]
    argv += ["--steps", "2", "--batch-size", "4", "--size", "32", "-o", str(weights)]
    assert cli.main(argv) == 0
    out = files["dir"] / "torch_grad_cam.gif"
    argv = ["tour", "--model", "vgg16-cifar10", "--weights", str(weights), "--cifar10", "3"]
    argv += ["--cifar10-path", str(files["cifar"]), "--layers", "block5_*", "-o", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "untrained" not in captured.err and "labelled 'cat'" in captured.out
    assert _frames(out)[0] == 3
    with pytest.raises(UsageError, match="Keras model files only"):
        layerscope.load_model("vgg16-cifar10", "random", trust_model=True)


def test_a_preprocessed_caffe_tensor_is_drawn_over_the_true_picture(files: dict[str, Path]) -> None:
    """Issue 9 #7: the recipe's own input (``vgg16.preprocess_input``: BGR, means subtracted)
    given to explain() is shown as the RGB picture it came from, not blue or stretched."""
    model = layerscope.load_model("vgg16-cifar10", files["notop"], framework="keras", size=32)
    img, _, _ = cifar10.load_image(5, "test", files["cifar"])
    xs = keras.applications.vgg16.preprocess_input(img[None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-head warning
        given = layerscope.explain(model, xs, layers="block5_conv3", preprocess=CaffePreprocess((32, 32)))
        recorded = layerscope.explain(model, xs, layers="block5_conv3")  # the model's own info knows it
    np.testing.assert_array_equal(given.images[0], img)
    np.testing.assert_array_equal(recorded.images[0], img)


def test_listing_a_keras_model_reads_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerscope.models import build_for_listing, keras_zoo

    def no_weights(*a: object, **k: object) -> None:
        raise AssertionError("listing must not fetch or read weights")

    monkeypatch.setattr(keras_zoo, "vgg16_imagenet_file", no_weights)
    monkeypatch.setattr(keras_zoo, "load_weights", no_weights)
    monkeypatch.setattr(keras_zoo, "init_random_", no_weights)
    model = build_for_listing("vgg16-cifar10", framework="keras", size=32)
    assert model.get_layer("vgg16").get_layer("block5_conv3").output.shape[1:] == (2, 2, 512)
    assert model_info(model).preprocess == CaffePreprocess((32, 32)) and model_info(model).warning is None
