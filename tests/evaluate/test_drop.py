"""Average Drop / Increase on a tiny linear model against the definition."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers_evaluate import Counting, H, W, _data  # noqa: E402

from layerscope.evaluate import average_drop_increase  # noqa: E402


def test_average_drop_increase_matches_the_definition() -> None:
    model = Counting()
    x, maps, targets = _data(n=4)
    maps = maps[:, ::2, ::2].copy()  # 4x4 maps, enlarged to 8x8
    res = average_drop_increase(model, x, maps, targets, perturb_batch=3)
    norm = (maps - maps.min(axis=(1, 2), keepdims=True)) / (np.ptp(maps, axis=(1, 2), keepdims=True) + 1e-8)
    up = torch.nn.functional.interpolate(torch.from_numpy(norm)[:, None], size=(H, W), mode="bilinear")
    xt = torch.from_numpy(x)
    y = torch.softmax(model(xt), 1).detach().numpy()[np.arange(4), targets]
    o = torch.softmax(model(xt * up), 1).detach().numpy()[np.arange(4), targets]
    np.testing.assert_allclose(res.drop, np.maximum(0, y - o) / (y + 1e-7), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(res.increase, o > y)
    np.testing.assert_allclose(res.average_drop, (np.maximum(0, y - o) / (y + 1e-7)).mean(), rtol=1e-5)
