"""Deletion/insertion, Average Drop/Increase and ROAD on tiny linear models whose answers
follow from the papers' definitions (numpy references written here), the cost announced,
and batching that does not change the numbers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from layerscope.errors import UsageError  # noqa: E402
from layerscope.evaluate import average_drop_increase, baseline_input, deletion_insertion, linear_imputation, road  # noqa: E402
from layerscope.evaluate.perturbation import curve_counts, deletion_insertion_passes, road_passes  # noqa: E402

H = W = 8


class Counting(torch.nn.Module):
    """A linear model, logits = <w_c, x>, that counts the inputs it sees."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(classes, 2, H, W, generator=g))
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return torch.einsum("nchw,kchw->nk", x, self.w)


def _data(n: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, H, W)).astype(np.float32)
    maps = rng.random((n, H, W)).astype(np.float32)
    maps[0, :2] = 0.5  # ties: raster order decides
    targets = rng.integers(0, 3, n)
    return x, maps, targets


def _logit(w: np.ndarray, x: np.ndarray, t: int) -> float:
    return float((w[t] * x).sum())


def test_curve_counts() -> None:
    assert curve_counts(10, 4) == [0, 3, 6, 9, 10]
    assert curve_counts(64, 8) == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    assert curve_counts(3, 20) == [0, 1, 2, 3]
    with pytest.raises(UsageError):
        curve_counts(10, 0)


def test_deletion_insertion_matches_the_definition() -> None:
    model = Counting()
    x, maps, targets = _data()
    res = deletion_insertion(model, x, maps, targets, steps=8, baseline="zero", score="logit", batch_size=5)
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
    a = deletion_insertion(model, x, layers, targets, steps=20, batch_size=1000)
    # RISE's zero/blur pair: the original and two all-baseline images per image, then both curves'
    # inner points per map (64 pixels in 20 steps: 4 a step, 17 points, 15 inner).
    assert len(curve_counts(H * W, 20)) == 17
    assert model.seen == deletion_insertion_passes(2, 13, H * W, 20, same_baseline=False) == 2 * (3 + 13 * 2 * 15)
    # At 96x96, 21 points: 13 layers cost 13 x 38 + 3 passes per image.
    assert deletion_insertion_passes(1, 13, 96 * 96, 20, same_baseline=False) == 13 * 38 + 3 <= 13 * 20 * 2
    assert model.seen <= 2 * 13 * 20 * 2  # the budget per image
    b = deletion_insertion(model, x, layers, targets, steps=20, batch_size=7)
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


def test_average_drop_increase_matches_the_definition() -> None:
    model = Counting()
    x, maps, targets = _data(n=4)
    maps = maps[:, ::2, ::2].copy()  # 4x4 maps, enlarged to 8x8
    res = average_drop_increase(model, x, maps, targets, batch_size=3)
    norm = (maps - maps.min(axis=(1, 2), keepdims=True)) / (np.ptp(maps, axis=(1, 2), keepdims=True) + 1e-8)
    up = torch.nn.functional.interpolate(torch.from_numpy(norm)[:, None], size=(H, W), mode="bilinear")
    xt = torch.from_numpy(x)
    y = torch.softmax(model(xt), 1).detach().numpy()[np.arange(4), targets]
    o = torch.softmax(model(xt * up), 1).detach().numpy()[np.arange(4), targets]
    np.testing.assert_allclose(res.drop, np.maximum(0, y - o) / (y + 1e-7), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(res.increase, o > y)
    np.testing.assert_allclose(res.average_drop, (np.maximum(0, y - o) / (y + 1e-7)).mean(), rtol=1e-5)


def test_linear_imputation_is_the_weighted_neighbour_mean() -> None:
    pytest.importorskip("scipy")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 9, 7))
    removed = rng.random((2, 9, 7)) < 0.6
    removed[:, 0, 0] = True  # a corner: only three neighbours
    out = linear_imputation(x, removed)
    np.testing.assert_array_equal(
        out[~np.broadcast_to(removed[:, None], x.shape)], x[~np.broadcast_to(removed[:, None], x.shape)]
    )
    for b, r, c in zip(*np.nonzero(removed), strict=True):
        num, den = np.zeros(3), 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy or dx) and 0 <= r + dy < 9 and 0 <= c + dx < 7:
                    wt = 1 / 6 if dy == 0 or dx == 0 else 1 / 12
                    num += wt * out[b, :, r + dy, c + dx]
                    den += wt
        np.testing.assert_allclose(out[b, :, r, c], num / den, atol=1e-10)


def test_road_orders_and_cost() -> None:
    pytest.importorskip("scipy")
    model = Counting(classes=2)
    x, _, _ = _data(n=2)
    targets = np.array([0, 1])
    w = model.w.detach().numpy()
    good = np.stack([(w[t] * x[i]).sum(axis=0) for i, t in enumerate(targets)])
    model.seen = 0
    res = road(model, x, [good, -good], targets, fractions=(0.25, 0.5), noise=0.0, score="logit", batch_size=3)
    assert model.seen == road_passes(2, 2, (0.25, 0.5)) == 2 * (1 + 2 * 2 * 2)
    assert res.morf.shape == (2, 2, 2)
    # By hand for the good map at 25 %: impute its top 16 pixels, score the target's logit.
    order = np.argsort(-good[0].ravel(), kind="stable")
    removed = np.zeros(H * W, bool)
    removed[order[:16]] = True
    ref = linear_imputation(x[:1].astype(np.float64), removed.reshape(1, H, W))[0]
    np.testing.assert_allclose(res.morf[0, 0, 0], _logit(w, ref, 0), rtol=1e-4, atol=1e-4)
    lerf = np.zeros(H * W, bool)
    lerf[order[-16:]] = True
    ref = linear_imputation(x[:1].astype(np.float64), lerf.reshape(1, H, W))[0]
    np.testing.assert_allclose(res.lerf[0, 0, 0], _logit(w, ref, 0), rtol=1e-4, atol=1e-4)
    # The faithful map ranks better than its negative.
    assert (res.combined[0] > res.combined[1]).all()
    with pytest.raises(UsageError):
        road(model, x, good, targets, fractions=(0.0, 0.5))
