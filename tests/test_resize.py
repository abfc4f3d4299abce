"""layerscope.resize: the one bilinear resize (half-pixel centres), checked against torch and
by hand, and used by the methods, the metrics, the datasets and the renderer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerscope import render, resize
from layerscope.datasets import shapes
from layerscope.evaluate import upsample_bilinear
from layerscope.methods import _ops


def torch_ref(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    return F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize(("h", "w", "H", "W"), [(7, 5, 20, 13), (14, 14, 224, 224), (10, 8, 3, 5), (1, 1, 4, 4)])
def test_numpy_equals_torch_interpolate(h: int, w: int, H: int, W: int) -> None:
    a = np.random.default_rng(0).random((2, h, w))
    np.testing.assert_allclose(resize.resize_bilinear(a, (H, W)), torch_ref(a, (H, W)), atol=1e-12)
    a32 = a.astype(np.float32)
    out = resize.resize_bilinear(a32, (H, W))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, torch_ref(a, (H, W)), atol=1e-6)
    t = resize.resize_bilinear(torch.from_numpy(a), (H, W))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), torch_ref(a, (H, W)), atol=1e-12)


def test_hand_computed_half_pixel_centres() -> None:
    # [0, 1] → 4 samples at input positions -0.25→0 (clamped), 0.25, 0.75, 1.25→1.
    np.testing.assert_allclose(resize.resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))[0], [0.0, 0.25, 0.75, 1.0])
    m = resize.bilinear_matrix(2, 4)
    np.testing.assert_allclose(m, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert not m.flags.writeable
    with pytest.raises(ValueError):
        resize.bilinear_matrix(0, 3)


def test_non_finite_values_stay_local_as_in_torch() -> None:
    a = np.random.default_rng(1).random((1, 6, 6))
    a[0, 2, 2] = np.nan
    ours, ref = resize.resize_bilinear(a, (12, 12)), torch_ref(a, (12, 12))
    assert np.array_equal(np.isnan(ours), np.isnan(ref)) and 0 < np.isnan(ours).sum() < 20
    np.testing.assert_allclose(ours[~np.isnan(ours)], ref[~np.isnan(ref)], atol=1e-12)


def test_every_user_shares_the_one_convention() -> None:
    a = np.random.default_rng(2).random((3, 5, 7)).astype(np.float32)
    ref = torch_ref(a, (16, 9))
    np.testing.assert_allclose(upsample_bilinear(a, (16, 9)), ref, atol=1e-6)  # metrics
    np.testing.assert_allclose(_ops.upsample(a, (16, 9)), ref, atol=1e-6)  # methods (numpy)
    np.testing.assert_allclose(_ops.upsample(torch.from_numpy(a), (16, 9)).numpy(), ref, atol=1e-6)  # torch
    np.testing.assert_allclose(render.resize_map(a[0], (16, 9)), ref[0], atol=1e-6)  # display
    np.testing.assert_array_equal(shapes._upsample_matrix(3, 64), resize.bilinear_matrix(3, 64).astype(np.float32))


@pytest.mark.parametrize("shape", [(517, 733, 3), (100, 90, 3), (1, 500, 3), (64, 64, 4), (300, 200)])
@pytest.mark.parametrize("size", [(224, 224), (37, 500)])
def test_resize_photo_equals_pil_resizing_the_whole_image(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    from PIL import Image

    from layerscope.resize import resize_photo

    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    want = np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    got = resize_photo(a, size)
    np.testing.assert_array_equal(got.reshape(want.shape), want)
