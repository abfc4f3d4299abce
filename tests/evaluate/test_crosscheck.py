"""The metrics against independent implementations, on the demo model and fresh shapes images:
torchcam's ``DeletionInsertionMetric`` and ``ClassificationMetric`` (same conventions: equal to
1e-4), Quantus' ROAD imputation and its cascading randomisation + Spearman similarity (equal
to float rounding)."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import layerscope  # noqa: E402
from layerscope.evaluate import (  # noqa: E402
    average_drop_increase,
    deletion_insertion,
    linear_imputation,
    randomisable_modules,
    randomisation_check,
)

LAYERS = ["block1_conv2", "block3_conv3", "block5_conv3"]
N = 4


@pytest.fixture(scope="module")
def setup():
    from layerscope.datasets import make_dataset
    from layerscope.info import info_for

    model = layerscope.load_model("demo")
    images, labels, _ = make_dataset(N, 7, 96)
    x = torch.as_tensor(np.asarray(info_for(model).preprocessor()(list(images))))
    exp = layerscope.explain(model, x, LAYERS, "gradcam", labels.tolist())
    return model, x, exp


class FixedCams:
    """torchcam's extractor protocol, answering with maps computed by layerscope."""

    def __init__(self, model, cams):
        self.model = model
        self.cams = cams

    def __call__(self, class_idx=None, scores=None, normalized=True, *, targets=None, **kwargs):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


@pytest.mark.parametrize("layer", LAYERS)
def test_deletion_insertion_equals_torchcam(setup, layer: str) -> None:
    metrics = pytest.importorskip("torchcam.metrics")
    model, x, exp = setup
    cams = torch.from_numpy(exp.cams[layer])
    ref = metrics.DeletionInsertionMetric(
        FixedCams(model, cams), functools.partial(torch.softmax, dim=-1), steps=10, batch_size=50
    )
    ref.update(x, class_idx=[int(t) for t in exp.targets])
    expected = ref.summary()
    ours = deletion_insertion(model, x, exp.cams[layer], exp.targets, steps=10, baseline="zero")
    assert abs(ours.deletion.mean() - expected["deletion_auc"]) <= 1e-4
    assert abs(ours.insertion.mean() - expected["insertion_auc"]) <= 1e-4


@pytest.mark.parametrize("layer", LAYERS)
def test_average_drop_increase_equals_torchcam(setup, layer: str) -> None:
    metrics = pytest.importorskip("torchcam.metrics")
    from torchcam.methods.core import _CAM

    model, x, exp = setup
    normalised = _CAM._normalize(torch.from_numpy(exp.cams[layer]).clone())  # torchcam's own min-max
    ref = metrics.ClassificationMetric(FixedCams(model, normalised), functools.partial(torch.softmax, dim=-1))
    ref.update(x, class_idx=[int(t) for t in exp.targets])
    expected = ref.summary()
    ours = average_drop_increase(model, x, exp.cams[layer], exp.targets)
    assert abs(float(ours.average_drop) - expected["avg_drop"]) <= 1e-4
    assert float(ours.average_increase) == expected["conf_increase"]


@pytest.mark.slow
def test_road_imputation_equals_quantus(setup) -> None:
    pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation

    _, x, exp = setup
    xa = x.numpy().astype(np.float64)
    up = torch.nn.functional.interpolate(torch.from_numpy(exp.cams["block5_conv3"])[:, None], size=(96, 96),
                                         mode="bilinear")[:, 0].numpy()  # fmt: skip
    for i, frac in zip(range(2), (0.1, 0.6), strict=True):
        top = np.argsort(-up[i].ravel(), kind="stable")[: int(96 * 96 * frac)]
        removed = np.zeros(96 * 96, bool)
        removed[top] = True
        expected = noisy_linear_imputation(xa[i], top, noise=0.0)
        ours = linear_imputation(xa[i : i + 1], removed.reshape(1, 96, 96))[0]
        np.testing.assert_allclose(ours, expected, atol=1e-8)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:An input array is constant")  # scipy on an all-zero map: NaN, as ours
def test_randomisation_equals_quantus_cascade_and_spearman(setup) -> None:
    pytest.importorskip("quantus")
    from quantus.functions.similarity_func import correlation_spearman
    from quantus.helpers.model.pytorch_model import PyTorchModel

    from layerscope.info import info_for

    model, x, exp = setup
    info = info_for(model)
    targets = [int(t) for t in exp.targets]
    wrapped = PyTorchModel(model, channel_first=True)
    steps = [(name, copy.model if hasattr(copy, "model") else copy) for name, copy in
             _materialised(wrapped.get_random_layer_generator(order="top_down", seed=42))]  # fmt: skip
    # Quantus' cascade is ours: the same modules, top first.
    assert [s[0] for s in steps] == list(reversed(randomisable_modules(model)))
    ours = randomisation_check(model, x, "gradcam", LAYERS, targets, trained=exp.cams, randomised=steps)
    for k, (_, random_model) in enumerate(steps):
        rand = layerscope.explain(random_model, x, LAYERS, "gradcam", targets, info=info)
        for j, layer in enumerate(LAYERS):
            a = exp.cams[layer].reshape(N, -1)
            b = rand.cams[layer].reshape(N, -1)
            expected = np.asarray([correlation_spearman(a[i], b[i]) for i in range(N)], dtype=np.float64)
            np.testing.assert_allclose(ours.correlation[k, j], expected, atol=1e-10, equal_nan=True)


def _materialised(generator):
    """Quantus yields one model, randomised further at each step: copy each step."""
    import copy

    return [(name, copy.deepcopy(m)) for name, m in generator]
