"""The Keras 3 capture adapter, on whichever backend this process runs (torch by default;
``test_keras_backends.py`` reruns this file on TensorFlow and JAX in subprocesses).

Known answers on a hand-weighted model, parity with layerscope's torch VGG16 (same weights,
converted), one forward and one backward pass, every kind of model, the caller's model
left as it was.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # a Keras backend is fixed when keras is imported

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if not keras.__version__.startswith("3"):  # pragma: no cover
    pytest.skip("Keras 3 needed", allow_module_level=True)
# Keras' own numpy conversions on the torch backend warn about numpy 2's copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from keras import layers  # noqa: E402

import layerscope  # noqa: E402
from layerscope.capture import keras as ck  # noqa: E402
from layerscope.errors import ModelError, UsageError  # noqa: E402
from layerscope.info import ModelInfo  # noqa: E402
from layerscope.inputs import Preprocess  # noqa: E402
from layerscope.methods import get_method, list_methods  # noqa: E402
from layerscope.models import keras_zoo  # noqa: E402

BACKEND = keras.backend.backend()
VGG_NAMES = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


def _img(size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([x * 255 / size, y * 255 / size, np.full((size, size), 90.0)], axis=2)
    img[size // 4 : size // 2, size // 3 : 2 * size // 3] = (250, 240, 30)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def _minmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
    return (a - lo) / np.where(hi > lo, hi - lo, 1)


class Count(layers.Layer):
    """Identity that counts the forward passes that really compute (not JAX's shape trace)."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.calls: list[str] = []

    def call(self, x: object) -> object:
        y = x * 1.0
        kind = type(y).__name__
        if "Jaxpr" not in kind:  # JAX's shape-only trace (eval_shape) computes nothing
            self.calls.append(kind)
        return y


def small(name: str = "small", count: bool = False) -> keras.Model:
    """conv(4) → pool → conv(8) → GAP → Dense(3, softmax), 16×16 RGB, seeded weights."""
    inp = keras.Input((16, 16, 3), name="image")
    x = Count(name="count")(inp) if count else inp
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inp, out, name=name)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


PP16 = Preprocess(size=(16, 16))


def _nm(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.float64)
    r = c.max() - c.min()
    return (c - c.min()) / r if r > 1e-12 else np.zeros_like(c)


# --------------------------------------------------------------------------- known answers


def tiny() -> keras.Model:
    """conv(1→2, 1×1, weights [1, −1], linear, no bias) → GAP → Dense(2, no bias).

    For input x: A0 = x, A1 = −x; y0 = 2·mean(A0) + 1·mean(A1), so Grad-CAM's weights are
    2/(hw) and 1/(hw) and the map is ReLU(x/(hw)).
    """
    inp = keras.Input((4, 4, 1))
    a = layers.Conv2D(2, 1, use_bias=False, name="conv")(inp)
    out = layers.Dense(2, use_bias=False, name="fc")(layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)])
    model.get_layer("fc").set_weights([np.array([[2.0, 0.0], [1.0, 0.0]], np.float32)])
    return model


def test_known_answer_gradcam() -> None:
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1) / 16
    exp = layerscope.explain(tiny(), x, target=0)
    assert exp.layers == ["conv"] and exp.shapes["conv"] == (4, 4, 2)
    np.testing.assert_allclose(exp.cams["conv"][0], x[0, :, :, 0] / 16, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(exp.scores, [2 * x.mean() - x.mean()], rtol=1e-5)
    # Target 1 has zero weights: a flat map, finite zeros, flagged, no NaN.
    exp1 = layerscope.explain(tiny(), x, target=1)
    assert np.all(exp1.cams["conv"] == 0) and exp1.flat["conv"][0]


def test_outer_torch_no_grad_torch_backend_only() -> None:
    if keras.backend.backend() != "torch":
        pytest.skip("an outer torch.no_grad matters on the torch backend only")
    import torch

    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1) / 16
    with torch.no_grad():
        exp = layerscope.explain(tiny(), x, target=0)
    np.testing.assert_allclose(exp.cams["conv"][0], x[0, :, :, 0] / 16, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- parity with torch


@pytest.fixture(scope="module")
def torch_and_keras_vgg() -> tuple[object, keras.Model]:
    pytest.importorskip("torch")
    from conftest import random_biases_

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tm = layerscope.load_model("vgg16-cifar10", weights="random")
    random_biases_(tm)
    km = keras_zoo.build_recipe((32, 32, 3))
    keras_zoo.torch_to_keras_weights(tm.state_dict(), km)
    return tm, km


@pytest.mark.parametrize("guided", [False, True])
def test_parity_with_torch_vgg16_every_layer(torch_and_keras_vgg: tuple, guided: bool) -> None:
    tm, km = torch_and_keras_vgg
    pp = Preprocess(size=(32, 32))
    img = _img(32)
    et = layerscope.explain(tm, img, preprocess=pp, target=3, guided_grads=guided)
    ek = layerscope.explain(km, img, preprocess=pp, target=3, guided_grads=guided)
    assert ek.layers == et.layers == VGG_NAMES
    np.testing.assert_allclose(ek.scores, et.scores, rtol=1e-4)
    for name in VGG_NAMES:
        c, h, w = et.shapes[name]
        assert ek.shapes[name] == (h, w, c)  # Keras' own layout, real sizes
        assert ek.cams[name].shape == et.cams[name].shape == (1, h, w)
        assert not et.flat[name][0]
        diff = float(np.abs(_nm(ek.cams[name]) - _nm(et.cams[name])).max())
        assert diff <= 1e-4, f"{name}: {diff}"


def test_weight_conversion_round_trip(torch_and_keras_vgg: tuple) -> None:
    tm, km = torch_and_keras_vgg
    from helpers_keras import keras_to_torch_weights

    back = keras_to_torch_weights(km, list(tm.state_dict()))
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy())


# --------------------------------------------------------------------------- layers


def test_nested_base_names_and_paths() -> None:
    km = keras_zoo.build_recipe((32, 32, 3))
    assert [n for n, _ in ck.resolve_layers(km, None)] == VGG_NAMES
    assert ck.resolve_layers(km, "block5_conv3") == [("block5_conv3", "vgg16/block5_conv3")]
    assert ck.resolve_layers(km, "vgg16/block1_conv1") == [("vgg16/block1_conv1", "vgg16/block1_conv1")]
    assert [n for n, _ in ck.resolve_layers(km, "*conv1")] == [f"block{b}_conv1" for b in range(1, 6)]
    with pytest.raises(UsageError, match="Did you mean block5_conv3"):
        ck.resolve_layers(km, "block5_cnv3")


def test_flat_and_nested_recipe_agree() -> None:
    nested = keras_zoo.build_recipe((32, 32, 3))
    base = nested.get_layer("vgg16")
    x = layers.GlobalAveragePooling2D()(base.output)  # the notebook's other style: base.output
    x = nested.get_layer("dense")(x)
    flat = keras.Model(base.input, nested.get_layer("predictions")(x))
    pp = Preprocess(size=(32, 32))
    a = layerscope.explain(nested, _img(32), preprocess=pp, target=1)
    b = layerscope.explain(flat, _img(32), preprocess=pp, target=1)
    assert a.layers == b.layers == VGG_NAMES
    for n in VGG_NAMES:
        np.testing.assert_allclose(a.cams[n], b.cams[n], rtol=1e-5, atol=1e-10)


def test_sequential_model() -> None:
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            layers.Conv2D(4, 3, activation="relu", name="s1"),
            layers.Conv2D(6, 3, activation="relu", name="s2"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2),
        ]
    )
    exp = layerscope.explain(model, _img(16), preprocess=PP16)
    assert exp.layers == ["s1", "s2"] and exp.shapes["s2"] == (12, 12, 6)


class Sub(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.first = layers.Conv2D(4, 3, padding="same", activation="relu", name="first")
        self.second = layers.Conv2D(5, 3, padding="same", activation="relu", name="second")
        self.fc = layers.Dense(3)

    def call(self, x: object) -> object:
        h = self.second(self.first(x))
        return self.fc(keras.ops.mean(h, axis=(1, 2)))


class SideBranch(Sub):
    """Runs ``second`` but throws its output away: the score does not depend on it."""

    def call(self, x: object) -> object:
        h = self.first(x)
        self.second(h)
        return self.fc(keras.ops.mean(h, axis=(1, 2)))


class RawOps(Sub):
    """Uses ``second``'s kernel directly: the layer itself never runs."""

    def call(self, x: object) -> object:
        h = self.first(x)
        h2 = keras.ops.relu(keras.ops.conv(h, self.second.kernel, padding="same"))
        return self.fc(keras.ops.mean(h2, axis=(1, 2)))


def test_subclassed_model() -> None:
    model = Sub()
    model(np.zeros((1, 16, 16, 3), np.float32))
    exp = layerscope.explain(model, _img(16), preprocess=PP16)
    assert exp.layers == ["first", "second"] and exp.shapes["first"] == (16, 16, 4)


def test_layer_the_output_does_not_depend_on_is_flat() -> None:
    model = SideBranch()
    model(np.zeros((1, 16, 16, 3), np.float32))
    exp = layerscope.explain(model, _img(16), preprocess=PP16)
    assert exp.flat["second"][0] and np.all(exp.cams["second"] == 0)
    assert not exp.flat["first"][0]


def test_unreachable_layer_is_a_clear_error() -> None:
    model = RawOps()
    model.second.build((None, 16, 16, 4))
    model(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ModelError, match="'second' did not run in the forward pass"):
        layerscope.explain(model, _img(16), preprocess=PP16)
    assert all("call" not in layer.__dict__ for _, layer in ck.walk(model))


def test_dense_layer_is_not_a_feature_map() -> None:
    model = small()
    with pytest.raises(UsageError, match=r"'fc' outputs .* not a .* feature map"):
        layerscope.explain(model, _img(16), preprocess=PP16, layers=["c1", "fc"])
    assert all("call" not in layer.__dict__ for _, layer in ck.walk(model))


def test_no_conv_layer() -> None:
    inp = keras.Input((4,))
    model = keras.Model(inp, layers.Dense(2)(inp))
    with pytest.raises(ModelError, match="no Conv2D"):
        ck.resolve_layers(model, None)


def test_channels_first_input_from_preprocess_is_transposed() -> None:
    model = small()
    x_nchw = PP16([_img(16)])
    a = layerscope.explain(model, x_nchw, target=0)
    b = layerscope.explain(model, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)), target=0)
    for n in a.layers:
        np.testing.assert_allclose(a.cams[n], b.cams[n], rtol=1e-6)
    with pytest.raises(UsageError, match="takes 16×16 images"):
        layerscope.explain(model, _img(16))  # the default preprocessing makes 224×224


def test_targets() -> None:
    model = small()
    info = ModelInfo(class_names=("a", "b", "c"))
    exp = layerscope.explain(model, [_img(16), _img(16, 1)], preprocess=PP16, target="c", info=info)
    assert list(exp.targets) == [2, 2] and exp.class_name(0) == "c"
    probs = np.asarray(keras.ops.convert_to_numpy(model(PP16([_img(16)]).transpose(0, 2, 3, 1))))
    np.testing.assert_allclose(exp.scores[0], probs[0, 2], rtol=1e-5)  # the softmax output itself
    top = layerscope.explain(model, _img(16), preprocess=PP16)
    assert top.targets[0] == probs[0].argmax()
    with pytest.raises(UsageError, match="out of range"):
        layerscope.explain(model, _img(16), preprocess=PP16, target=3)


def test_frozen_base_still_has_gradients() -> None:
    km = keras_zoo.build_recipe((32, 32, 3))
    km.get_layer("vgg16").trainable = False
    exp = layerscope.explain(km, _img(32), preprocess=Preprocess(size=(32, 32)), layers="block5_conv3")
    assert exp.cams["block5_conv3"].max() > 0
    assert km.get_layer("vgg16").trainable is False


# --------------------------------------------------------------------------- one pass, model untouched


def _count_gradients(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    if BACKEND == "torch":
        import torch

        real = torch.autograd.grad

        def grad(*a: object, **k: object) -> object:
            calls.append(1)
            return real(*a, **k)

        monkeypatch.setattr(torch.autograd, "grad", grad)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        real_tf = tf.GradientTape.gradient

        def gradient(self: object, *a: object, **k: object) -> object:
            calls.append(1)
            return real_tf(self, *a, **k)

        monkeypatch.setattr(tf.GradientTape, "gradient", gradient)
    else:
        import jax

        real_jax = jax.value_and_grad

        def value_and_grad(*a: object, **k: object) -> object:
            calls.append(1)
            return real_jax(*a, **k)

        monkeypatch.setattr(jax, "value_and_grad", value_and_grad)
    return calls


def test_one_forward_one_backward_for_all_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small(count=True)
    model.get_layer("count").calls.clear()  # building the model traced it too
    grads = _count_gradients(monkeypatch)
    exp = layerscope.explain(model, _img(16), preprocess=PP16, layers=["c1", "c2", "pool"])
    assert exp.layers == ["c1", "pool", "c2"]  # forward order
    assert len(model.get_layer("count").calls) == 1
    assert len(grads) == 1


def _snapshot(model: keras.Model) -> dict[str, object]:
    return {
        "dict": {path: sorted(layer.__dict__) for path, layer in ck.walk(model)},
        "nodes": {path: len(layer._inbound_nodes) for path, layer in ck.walk(model)},
        "trainable": {path: layer.trainable for path, layer in ck.walk(model)},
        "weights": [np.array(w) for w in model.get_weights()],
    }


def test_callers_model_unchanged() -> None:
    km = keras_zoo.build_recipe((32, 32, 3))
    km.get_layer("dense").trainable = False
    x = np.ascontiguousarray(Preprocess(size=(32, 32))([_img(32)]).transpose(0, 2, 3, 1))
    before, out_before = _snapshot(km), np.asarray(keras.ops.convert_to_numpy(km(x)))
    layerscope.explain(km, _img(32), preprocess=Preprocess(size=(32, 32)), guided_grads=True)
    with pytest.raises(UsageError):
        layerscope.explain(km, _img(32), preprocess=Preprocess(size=(32, 32)), layers=["block1_conv1", "dense"])
    after = _snapshot(km)
    assert after["dict"] == before["dict"] and after["nodes"] == before["nodes"]
    assert after["trainable"] == before["trainable"]
    for a, b in zip(after["weights"], before["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(keras.ops.convert_to_numpy(km(x))), out_before)
    assert km.get_layer("vgg16").get_layer("block1_conv1").output is not None  # the graph still answers


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("name", [n for n in list_methods() if "keras" in get_method(n).frameworks])
def test_every_keras_method_runs(name: str) -> None:
    exp = layerscope.explain(small(), _img(16), method=name, preprocess=PP16)
    for n in exp.layers:
        assert exp.cams[n].shape[0] == 1 and np.isfinite(exp.cams[n]).all() and exp.cams[n].min() >= 0


def test_torch_only_methods_are_refused() -> None:
    torch_only = [n for n in list_methods() if "keras" not in get_method(n).frameworks]
    if not torch_only:
        pytest.skip("every method runs on Keras")
    with pytest.raises(UsageError, match="not available for Keras"):
        layerscope.explain(small(), _img(16), method=torch_only[0], preprocess=PP16)


# --------------------------------------------------------------------------- the adapter contract


def test_layer_shapes_lists_keras_models_like_torch_ones() -> None:
    adapter = layerscope.capture.get_adapter("keras")
    rows = adapter.layer_shapes(small(), (224, 224))  # a fixed-size model uses its own 16×16
    assert rows == [("c1", "c1", (16, 16, 4)), ("c2", "c2", (8, 8, 8))]
    assert all(isinstance(r, layerscope.capture.LayerShape) for r in rows)
    every = adapter.layer_shapes(small(), (16, 16), every_module=True)
    assert [r.name for r in every] == ["c1", "pool", "c2", "gap", "fc"]
    assert every[3].shape == (8,) and every[4].shape == (3,)
    info = ModelInfo(layers={"first": "c1", "second": "c2"})
    assert [r.name for r in adapter.layer_shapes(small(), (16, 16), info)] == ["first", "second"]


def test_friendly_names_come_from_the_model_info() -> None:
    model = small()
    info = ModelInfo(layers={"stem": "c1"})
    assert ck.resolve_layers(model, None, info) == [("stem", "c1")]
    assert ck.resolve_layers(model, "c2", info) == [("c2", "c2")]
    exp = layerscope.explain(model, _img(16), preprocess=PP16, info=info)
    ref = layerscope.explain(model, _img(16), preprocess=PP16, layers="c1")
    assert exp.layers == ["stem"]
    np.testing.assert_array_equal(exp.cams["stem"], ref.cams["c1"])
    names = ck.layer_names(model, info)
    assert isinstance(names, dict) and names["stem"] == "c1" and names["c2"] == "c2"


def test_nan_output_is_a_model_error_and_bad_targets_are_clear() -> None:
    model = small()
    w = model.get_layer("fc").get_weights()
    model.get_layer("fc").set_weights([w[0], np.full_like(w[1], np.nan)])
    with pytest.raises(ModelError, match="output is NaN or inf for image 0"):
        layerscope.explain(model, _img(16), preprocess=PP16)
    for bad, message in ((True, "is a bool"), (1.5, "not a whole number"), (2**70, "out of range")):
        with pytest.raises(UsageError, match=message):
            layerscope.explain(small(), _img(16), preprocess=PP16, target=bad)


def test_precision_and_device_options() -> None:
    ref = layerscope.explain(small(), _img(16), preprocess=PP16, target=1)
    high = layerscope.explain(small(), _img(16), preprocess=PP16, target=1, precision="highest")
    for n in ref.layers:
        np.testing.assert_allclose(high.cams[n], ref.cams[n], rtol=1e-6)
    with pytest.raises(UsageError, match="precision='fast' is for PyTorch models"):
        layerscope.explain(small(), _img(16), preprocess=PP16, precision="fast")
    with pytest.raises(UsageError, match="is for PyTorch models"):
        layerscope.explain(small(), _img(16), preprocess=PP16, device="cuda:3")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "hirescam"])
def test_no_per_layer_host_copy(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The maps are computed where the tensors are; one transfer of all of them at the end."""
    model = small()
    ref = layerscope.explain(model, _img(16), preprocess=PP16, method=method, target=1)
    if BACKEND == "torch":
        import torch
        from torch.overrides import TorchFunctionMode

        class Count(TorchFunctionMode):
            def __init__(self) -> None:
                super().__init__()
                self.calls: list[str] = []

            def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                if getattr(func, "__name__", "") in {"cpu", "numpy", "item", "tolist", "__float__", "__bool__"}:
                    self.calls.append(func.__name__)
                return func(*args, **(kwargs or {}))

        x = torch.as_tensor(PP16([_img(16)]).transpose(0, 2, 3, 1))
        with Count() as mode:
            got = ck.run(model, x, ck.resolve_layers(model, None), 1, get_method(method).fn)
        assert mode.calls == ["numpy"]
    elif BACKEND in ("tensorflow", "jax"):
        copies = []
        monkeypatch.setattr(ck.DeviceArray, "__array__", lambda self, *a, **k: copies.append(1) or 1 / 0)
        transfers = []
        import layerscope.capture._maps as cm

        real = cm.host_transfer
        monkeypatch.setattr(cm, "host_transfer", lambda *a: transfers.append(1) or real(*a))
        got = layerscope.explain(model, _img(16), preprocess=PP16, method=method, target=1)
        assert copies == [] and transfers == [1]
    else:
        pytest.skip(f"no host-copy check for the {BACKEND} backend")
    for name in ref.layers:
        np.testing.assert_allclose(got.cams[name], ref.cams[name], rtol=1e-5, atol=1e-7)


class ClassToken(layers.Layer):
    """A learned class token put in front of the patch tokens."""

    def build(self, shape: tuple) -> None:
        self.cls = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal", name="cls")

    def call(self, t: object) -> object:
        ops = keras.ops
        return ops.concatenate([ops.repeat(self.cls, ops.shape(t)[0], axis=0), t], axis=1)


class FirstToken(layers.Layer):
    def call(self, t: object) -> object:
        return t[:, 0]


def keras_vit(blocks: int = 2) -> object:
    """Patch embedding (4 px), a class token, pre-norm attention blocks, a head on the class token."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    t = layers.Reshape((16, 8))(layers.Conv2D(8, 4, strides=4, name="patch")(inputs))
    t = ClassToken(name="cls")(t)
    for i in range(blocks):
        n = layers.LayerNormalization(name=f"ln{i}")(t)
        t = layers.Add()([t, layers.MultiHeadAttention(2, 4, name=f"attn{i}")(n, n)])
    y = layers.Dense(3, name="head")(FirstToken()(layers.LayerNormalization(name="norm")(t)))
    return keras.Model(inputs, y)


def test_token_layers_of_a_keras_vit_are_laid_out_as_maps() -> None:
    model = keras_vit()
    x_in = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    exp = layerscope.explain(model, x_in, layers=["ln0", "ln1"], target=[0, 2], method="layercam")
    for name in ("ln0", "ln1"):  # 1 class token + 16 patch tokens → 4×4; the last block's is not blank
        assert exp.cams[name].shape == (2, 4, 4) and exp.shapes[name] == (17, 8)
        assert exp.cams[name].max() > 0 and "tokens 17 → 4×4" in exp.caption(name)[0]


def test_keras_token_maps_equal_an_independent_gradcam_torch_backend_only() -> None:
    if BACKEND != "torch":
        pytest.skip("the reference uses torch.autograd")
    import torch

    model = keras_vit()
    x_in = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")
    exp = layerscope.explain(model, x_in, layers=["ln0", "ln1"], target=[1, 2])
    names = ["ln0", "ln1"]
    probe = keras.Model(model.inputs, [*(model.get_layer(n).output for n in names), model.output])
    *acts, out = probe(keras.ops.convert_to_tensor(x_in))
    grads = torch.autograd.grad(out[:, 1][0] + out[:, 2][1], acts)
    for name, a, g in zip(names, acts, grads, strict=True):
        a = a.detach().double().numpy()[:, 1:].reshape(2, 4, 4, 8)
        g = g.double().numpy()[:, 1:].reshape(2, 4, 4, 8)
        ref = np.maximum(np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a), 0)
        np.testing.assert_allclose(_minmax(exp.cams[name]), _minmax(ref), atol=1e-4)


def test_tokens_that_form_no_grid_are_a_clear_error() -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    tokens = layers.Cropping1D((0, 57), name="tokens")(layers.Reshape((64, 4))(x))  # 7 tokens: no grid of 8×8
    y = layers.Dense(2, name="head")(layers.GlobalAveragePooling1D()(tokens))
    model = keras.Model(inputs, y)
    x_in = np.random.default_rng(0).random((1, 8, 8, 3)).astype("float32")
    with pytest.raises(UsageError, match=r"its 7 tokens form no grid of the input"):
        layerscope.explain(model, x_in, layers="tokens")
    assert layerscope.explain(model, x_in, layers="conv").cams["conv"].shape == (1, 8, 8)
