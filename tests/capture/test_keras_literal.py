"""Literal answers for the Keras capture: a hand-weighted two-conv Keras model whose
Grad-CAM maps, scores and shapes are worked out by hand (captum-style ``basic_models``).

The model: ``x (3×3×1) → c1 = Conv2D(2, 1×1, relu, kernel [1, -1]) → c2 = Conv2D(1, 1×1,
kernel [1, 1]) → global average pooling → Dense(2, kernel [[2, 3]])``. So
``c1 = (relu(x), relu(-x))``, ``c2 = relu(x) + relu(-x) = |x|`` and the class scores are
``(2·mean|x|, 3·mean|x|)``. For class ``k`` with weight ``w_k``:

* ``∂y/∂c2 = w_k / 9`` at every pixel, so Grad-CAM's channel weight is ``w_k / 9`` and the
  map of ``c2`` is ``relu(w_k/9 · |x|) = w_k·|x|/9``;
* ``∂y/∂c1 = (w_k / 9, w_k / 9)`` (c2's kernel is ``[1, 1]``), so the map of ``c1`` is
  ``relu(w_k/9 · relu(x) + w_k/9 · relu(-x)) = w_k·|x|/9`` too.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if not keras.__version__.startswith("3"):  # pragma: no cover
    pytest.skip("Keras 3 needed", allow_module_level=True)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

import layerscope  # noqa: E402
from layerscope.capture import CaptureRequest, get_adapter  # noqa: E402

X = (np.arange(-4, 5, dtype=np.float32) / 4).reshape(1, 3, 3, 1)  # -1 … 1, one zero in the middle


def two_convs() -> keras.Model:
    layers = keras.layers
    inputs = keras.Input((3, 3, 1))
    c1 = layers.Conv2D(2, 1, activation="relu", use_bias=False, name="c1")(inputs)
    c2 = layers.Conv2D(1, 1, use_bias=False, name="c2")(c1)
    y = layers.Dense(2, use_bias=False, name="head")(layers.GlobalAveragePooling2D()(c2))
    model = keras.Model(inputs, y)
    model.get_layer("c1").set_weights([np.array([[[[1.0, -1.0]]]], np.float32)])
    model.get_layer("c2").set_weights([np.array([[[[1.0], [1.0]]]], np.float32)])
    model.get_layer("head").set_weights([np.array([[2.0, 3.0]], np.float32)])
    return model


@pytest.mark.parametrize(("target", "weight"), [(0, 2.0), (1, 3.0)])
def test_gradcam_of_both_layers_is_w_times_abs_x_over_9(target: int, weight: float) -> None:
    exp = layerscope.explain(two_convs(), X, layers=["c1", "c2"], target=target)
    want = weight * np.abs(X[0, :, :, 0]) / 9
    assert exp.layers == ["c1", "c2"]
    assert exp.shapes == {"c1": (3, 3, 2), "c2": (3, 3, 1)}  # the layer's own (channels-last) layout
    for name in ("c1", "c2"):
        np.testing.assert_allclose(exp.cams[name][0], want, rtol=1e-6, atol=1e-7)
    mean_abs = float(np.abs(X).mean())  # 20/36 = 5/9
    np.testing.assert_allclose(exp.outputs[0], [2 * mean_abs, 3 * mean_abs], rtol=1e-6)
    np.testing.assert_allclose(exp.scores, [weight * mean_abs], rtol=1e-6)
    assert exp.targets.tolist() == [target]


def test_the_adapter_hands_the_method_channels_first_activation_and_gradient() -> None:
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def record(a, g):
        a, g = np.asarray(a), np.asarray(g)
        seen[str(a.shape)] = (a, g)
        return a.sum(axis=1)

    adapter = get_adapter("keras")
    layers = adapter.resolve_layers(two_convs(), ["c1", "c2"])
    result = adapter.run(two_convs(), X, layers, 0, CaptureRequest(fn=record))
    a1, g1 = seen[str((1, 2, 3, 3))]
    a2, g2 = seen[str((1, 1, 3, 3))]
    np.testing.assert_allclose(a1[0, 0], np.maximum(X[0, :, :, 0], 0))
    np.testing.assert_allclose(a1[0, 1], np.maximum(-X[0, :, :, 0], 0))
    np.testing.assert_allclose(a2[0, 0], np.abs(X[0, :, :, 0]), rtol=1e-6)
    np.testing.assert_allclose(g1, np.full((1, 2, 3, 3), 2 / 9), rtol=1e-6)
    np.testing.assert_allclose(g2, np.full((1, 1, 3, 3), 2 / 9), rtol=1e-6)
    assert result.layers == ["c1", "c2"] and result.targets.tolist() == [0] and result.nonfinite == []
