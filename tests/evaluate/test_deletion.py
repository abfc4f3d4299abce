"""Deletion and insertion (RISE) on tiny linear models whose answers follow from the paper's
definition (numpy references written here), the cost announced, and batching that does not
change the numbers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers_evaluate import Counting, H, W, _data, _logit  # noqa: E402

from layerscope.errors import UsageError  # noqa: E402
from layerscope.evaluate import baseline_input, deletion_insertion  # noqa: E402
from layerscope.evaluate.deletion import curve_counts, deletion_insertion_passes  # noqa: E402


def test_curve_counts() -> None:
    assert curve_counts(10, 4) == [0, 3, 6, 9, 10]
    assert curve_counts(64, 8) == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    assert curve_counts(3, 20) == [0, 1, 2, 3]
    with pytest.raises(UsageError):
        curve_counts(10, 0)


def test_deletion_insertion_matches_the_definition() -> None:
    model = Counting()
    x, maps, targets = _data()
    res = deletion_insertion(model, x, maps, targets, steps=8, baseline="zero", score="logit", perturb_batch=5)
    w = model.w.detach().numpy()
    counts = curve_counts(H * W, 8)
    fr = np.asarray(counts) / (H * W)
    np.testing.assert_allclose(res.fractions, fr)
    for i in range(len(x)):
        order = np.argsort(-maps[i].ravel(), kind="stable")  # descending, ties in raster order
        dele, ins = [], []
        for c in counts:
            keep = np.ones(H * W, bool)
            keep[order[:c]] = False
            dele.append(_logit(w, x[i] * keep.reshape(H, W), targets[i]))
            ins.append(_logit(w, x[i] * ~keep.reshape(H, W), targets[i]))
        np.testing.assert_allclose(res.deletion_curves[i], dele, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(res.insertion_curves[i], ins, rtol=1e-5, atol=1e-4)
        auc_d = sum((dele[k] + dele[k + 1]) / 2 * (fr[k + 1] - fr[k]) for k in range(len(fr) - 1))
        np.testing.assert_allclose(res.deletion[i], auc_d, rtol=1e-5, atol=1e-4)


def test_deletion_insertion_cost_and_batching() -> None:
    model = Counting()
    x, maps, targets = _data(n=2)
    layers = [maps * (k + 1) ** 0.5 + np.float32(k) * maps[::-1] for k in range(13)]
    model.seen = 0
    a = deletion_insertion(model, x, layers, targets, steps=20, perturb_batch=1000)
    # RISE's zero/blur pair: the original and two all-baseline images per image, then both curves'
    # inner points per map (64 pixels in 20 steps: 4 a step, 17 points, 15 inner).
    assert len(curve_counts(H * W, 20)) == 17
    assert model.seen == deletion_insertion_passes(2, 13, H * W, 20, same_baseline=False) == 2 * (3 + 13 * 2 * 15)
    # At 96x96, 21 points: 13 layers cost 13 x 38 + 3 passes per image.
    assert deletion_insertion_passes(1, 13, 96 * 96, 20, same_baseline=False) == 13 * 38 + 3 <= 13 * 20 * 2
    assert model.seen <= 2 * 13 * 20 * 2  # the budget per image
    b = deletion_insertion(model, x, layers, targets, steps=20, perturb_batch=7)
    np.testing.assert_allclose(a.deletion, b.deletion, rtol=1e-6)
    np.testing.assert_allclose(a.insertion, b.insertion, rtol=1e-6)
    assert a.deletion.shape == (13, 2) and a.deletion_curves.shape == (13, 2, 17)
    # A list of one map gives the same numbers as the map alone.
    one = deletion_insertion(model, x, layers[3], targets, steps=20)
    np.testing.assert_allclose(one.deletion, a.deletion[3], rtol=1e-6)


def test_probability_score_and_a_faithful_map() -> None:
    model = Counting(classes=2)
    x, _, _ = _data(n=2)
    targets = np.array([0, 1])
    w = model.w.detach().numpy()
    # The contribution map of the target (per pixel, summed over channels) is the ideal ranking;
    # its negative is the worst one.
    good = np.stack([(w[t] * x[i]).sum(axis=0) for i, t in enumerate(targets)])
    res_good = deletion_insertion(model, x, good, targets, steps=16, baseline="zero")
    res_bad = deletion_insertion(model, x, -good, targets, steps=16, baseline="zero")
    assert (res_good.deletion < res_bad.deletion).all()
    assert (res_good.insertion > res_bad.insertion).all()
    probs = torch.softmax(model(torch.from_numpy(x)), 1).detach().numpy()
    np.testing.assert_allclose(res_good.deletion_curves[:, 0], probs[[0, 1], targets], rtol=1e-5)


def test_baselines() -> None:
    x = torch.full((1, 3, 20, 20), 2.0)
    x[0, 1] = -1.0
    np.testing.assert_array_equal(baseline_input(x, "zero").numpy(), 0.0)
    np.testing.assert_allclose(baseline_input(x, "mean")[0, :, 0, 0].numpy(), [2.0, -1.0, 2.0])
    blur = baseline_input(x, "blur")
    # A constant image stays constant away from the border (the kernel sums to 1) …
    np.testing.assert_allclose(blur[0, :, 10, 10].numpy(), [2.0, -1.0, 2.0], rtol=1e-6)
    # … and fades towards 0 at it (zero padding, as RISE's code).
    assert 0 < blur[0, 0, 0, 0] < 2.0
    with pytest.raises(UsageError):
        baseline_input(x, "noise")
