"""Training the demo detector: deterministic steps, CenterNet targets by hand, batch norm
folded without changing the function."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope.models.demo_detector import DemoDetector, init_detector_
from layerscope.training import demo_detector as T


def test_a_few_training_steps_are_deterministic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = T.train(tmp_path / "a.safetensors", steps=3, batch_size=4, pool=6, progress=False)
    b = T.train(tmp_path / "b.safetensors", steps=3, batch_size=4, pool=6, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    fresh = DemoDetector()
    init_detector_(fresh, 0)
    assert list(fresh.state_dict()) == list(sa)  # folded: the plain model's keys
    assert not all(torch.equal(fresh.state_dict()[k], sa[k]) for k in sa)  # and it learned something
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()


def test_targets_by_hand() -> None:
    boxes = [np.array([[16.0, 40, 48, 56]], dtype=np.float32)]  # centre (32, 48): cell (4, 6), 4 × 2 cells
    t = T.targets(boxes, [np.array([3])], 10, 16)
    heat, box, where = t["heatmap"].numpy(), t["box"].numpy(), t["where"].numpy()
    assert heat[0, 3, 6, 4] == 1.0 and heat[0, 3].sum() > 1.0 and heat[0, [0, 1, 2, 4]].max() == 0.0
    assert np.argwhere(where[0]).tolist() == [[6, 4]]
    np.testing.assert_allclose(box[0, :, 6, 4], [math.log(4), math.log(2), 0.0, 0.0], atol=1e-6)
    assert t["heatmap"].shape == (1, 10, 16, 16)


def test_loss_is_lower_for_the_right_heatmap() -> None:
    t = T.targets([np.array([[16.0, 40, 48, 56]], dtype=np.float32)], [np.array([3])], 10, 16)
    good = {"heatmap": torch.where(t["heatmap"] >= 1, 6.0, -6.0), "box": t["box"].clone()}
    bad = {"heatmap": torch.zeros(1, 10, 16, 16), "box": torch.zeros(1, 4, 16, 16)}
    assert float(T.loss(good, t)) < 0.1 < float(T.loss(bad, t))


def test_batch_norm_folds_into_the_same_function() -> None:
    torch.manual_seed(0)
    model = DemoDetector()
    init_detector_(model, 1)
    T.add_batch_norm_(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model.raw(x)
        T.fold_batch_norm_(model)
        after = model.raw(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=1e-4, rtol=1e-4)


def test_main_needs_something_to_do() -> None:
    with pytest.raises(SystemExit):
        T.main([])
