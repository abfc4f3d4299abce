"""The model-randomisation sanity check: Spearman's rank correlation (moved here from
``test_demo.py``) and the cascading randomisation."""

from __future__ import annotations

import numpy as np
import pytest

from layerscope.evaluate import cascading_randomisation, randomisation_check, randomised_model, rank_correlation
from layerscope.evaluate.sanity import randomisable_modules


def test_rank_correlation_known_values() -> None:
    a = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]] * 4)
    b = np.array(
        [
            [10.0, 20.0, 30.0, 40.0, 50.0],  # same order: 1
            [5.0, 4.0, 3.0, 2.0, 1.0],  # reversed: -1
            [2.0, 1.0, 4.0, 3.0, 5.0],  # d = (1,1,1,1,0): 1 - 6*4/(5*24) = 0.8
            [1.0, 3.0, 2.0, 5.0, 4.0],  # also 0.8
        ]
    )
    np.testing.assert_allclose(rank_correlation(a, b), [1.0, -1.0, 0.8, 0.8])


def test_rank_correlation_ties_and_shapes() -> None:
    # Ties take the mean rank: a ranks (1, 2.5, 2.5, 4), b ranks (1, 2, 3, 4).
    # Pearson of those ranks = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    a = np.array([[[0.0, 1.0], [1.0, 2.0]]])
    b = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    np.testing.assert_allclose(rank_correlation(a, b), [np.sqrt(0.9)])
    # Constant samples have no rank correlation: NaN.
    out = rank_correlation(np.zeros((1, 4)), np.arange(4.0)[None])
    assert np.isnan(out).all()
    with pytest.raises(ValueError):
        rank_correlation(np.zeros((2, 3)), np.zeros((2, 4)))


def test_rank_correlation_matches_definition() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((6, 50))
    b = a + rng.normal(0, 0.5, size=a.shape)
    ra = a.argsort(axis=1).argsort(axis=1).astype(float)
    rb = b.argsort(axis=1).argsort(axis=1).astype(float)
    expected = [np.corrcoef(x, y)[0, 1] for x, y in zip(ra, rb, strict=True)]
    np.testing.assert_allclose(rank_correlation(a, b), expected, atol=1e-12)


def test_rank_correlation_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    a = np.round(rng.random((5, 7, 7)), 1)  # many ties
    b = np.round(a + rng.normal(0, 0.3, a.shape), 1)
    expected = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rank_correlation(a, b), expected, atol=1e-12)


def _tiny_net():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()  # fmt: skip


def test_cascade_goes_top_down_and_leaves_the_model_alone() -> None:
    torch = pytest.importorskip("torch")
    net = _tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert randomisable_modules(net) == ["0", "2", "6"]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    seen = []
    for name, copy in cascading_randomisation(net, seed=5):
        changed = [k.split(".")[0] for k, v in copy.state_dict().items() if not torch.equal(v, before[k])]
        seen.append((name, sorted(set(changed))))
    # One more module re-initialised at each step, from the output down.
    assert seen == [("6", ["6"]), ("2", ["2", "6"]), ("0", ["0", "2", "6"])]
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random state is untouched
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    # Deterministic: the same seed gives the same random model.
    a, b = randomised_model(net, 5), randomised_model(net, 5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_randomisation_check_correlations() -> None:
    torch = pytest.importorskip("torch")
    import layerscope
    from layerscope.info import ModelInfo

    net = _tiny_net()
    info = ModelInfo(layers={"c1": "0", "c2": "2"})
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    res = randomisation_check(net, x, "gradcam", info=info, targets=[0, 1, 2], seed=0)
    assert res.layers == ["c1", "c2"] and res.steps == ["6", "2", "0"]
    assert res.correlation.shape == (3, 2, 3)
    # Recompute one step by hand: the fully random model's maps against the trained ones.
    trained = layerscope.explain(net, x, ["c1", "c2"], "gradcam", [0, 1, 2], info=info)
    rand = layerscope.explain(randomised_model(net, 0), x, ["c1", "c2"], "gradcam", [0, 1, 2], info=info)
    for j, layer in enumerate(["c1", "c2"]):
        np.testing.assert_allclose(
            res.correlation[-1, j], rank_correlation(trained.cams[layer], rand.cams[layer]), equal_nan=True
        )
    last_only = randomisation_check(net, x, "gradcam", info=info, targets=[0, 1, 2], cascade=False)
    assert last_only.steps == ["0"]
    np.testing.assert_allclose(last_only.correlation[0], res.correlation[-1], equal_nan=True)
