"""ROAD's imputation against its definition and ROAD's orders and cost on a tiny linear model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers_evaluate import Counting, H, W, _data, _logit  # noqa: E402

from layerscope.errors import UsageError  # noqa: E402
from layerscope.evaluate import linear_imputation, road  # noqa: E402
from layerscope.evaluate.road import road_passes  # noqa: E402


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
    res = road(model, x, [good, -good], targets, fractions=(0.25, 0.5), noise=0.0, score="logit", perturb_batch=3)
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


def test_the_noise_does_not_depend_on_batching_or_on_the_other_maps() -> None:
    # One noise field per image: a map's ROAD is the same alone or among others, for any
    # perturb_batch (the layers of a ranking compared on the same noise).
    model = Counting()
    x, maps, targets = _data(n=3)
    together = road(model, x, [maps, -maps, maps[:, ::-1]], targets, fractions=(0.2, 0.6), noise=0.3, perturb_batch=5)
    for k, m in enumerate([maps, -maps, maps[:, ::-1]]):
        alone = road(model, x, m, targets, fractions=(0.2, 0.6), noise=0.3, perturb_batch=2)
        np.testing.assert_allclose(together.morf[k], alone.morf, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.lerf[k], alone.lerf, rtol=1e-5, atol=1e-6)
    noiseless = road(model, x, maps, targets, fractions=(0.2, 0.6), noise=0.0)
    assert not np.allclose(noiseless.morf, together.morf[0])  # the noise is there
    other_seed = road(model, x, maps, targets, fractions=(0.2, 0.6), noise=0.3, seed=1)
    assert not np.allclose(other_seed.morf, together.morf[0])


def test_the_noise_is_drawn_per_image_from_the_seed_and_its_index() -> None:
    # Issue 22 item 6: an image's noise depends on (seed, its index in the run) only, so a
    # data set split into chunks (or over Ray actors) gives the values of one whole call.
    model = Counting()
    x, maps, targets = _data(n=4)
    kw = {"fractions": (0.3,), "noise": 0.5, "seed": 7, "score": "logit"}
    whole = road(model, x, maps, targets, **kw)
    parts = [road(model, x[s], maps[s], targets[s], index=np.arange(4)[s], **kw) for s in (slice(0, 1), slice(1, 4))]
    np.testing.assert_allclose(np.concatenate([p.morf for p in parts]), whole.morf, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([p.lerf for p in parts]), whole.lerf, rtol=1e-6, atol=1e-6)
    # By hand for image 2 (logit = <w_t, x>, linear): its top 30 % pixels imputed, plus
    # 0.5 × a standard normal field from a CPU generator seeded SeedSequence([7, 2]).
    i, w = 2, model.w.detach().numpy()
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([7, i]).generate_state(1, np.uint64)[0]))
    field = torch.randn((2, H, W), generator=g).numpy().astype(np.float64)
    removed = np.zeros(H * W, bool)
    removed[np.argsort(-maps[i].ravel(), kind="stable")[: int(0.3 * H * W)]] = True
    removed = removed.reshape(1, H, W)
    ref = linear_imputation(x[i : i + 1].astype(np.float64), removed)[0] + 0.5 * removed * field
    np.testing.assert_allclose(whole.morf[i, 0], _logit(w, ref, targets[i]), rtol=1e-4, atol=1e-4)
    shifted = road(model, x[i : i + 1], maps[i : i + 1], targets[i : i + 1], index=[3], **kw)
    assert not np.allclose(shifted.morf[0], whole.morf[i])  # another index, another field
    with pytest.raises(UsageError, match="position >= 0"):
        road(model, x, maps, targets, index=[0, 1, 2], **kw)
