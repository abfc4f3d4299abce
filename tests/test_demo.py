"""The synthetic shapes dataset, the explanation metrics and the built-in demo model."""

from __future__ import annotations

import numpy as np
import pytest

from layerscope.datasets import CLASS_NAMES, make_dataset, make_sample
from layerscope.metrics import pointing_game, rank_correlation, upsample_bilinear

# ---------------------------------------------------------------- dataset


def test_class_names() -> None:
    assert len(CLASS_NAMES) == 10
    assert len(set(CLASS_NAMES)) == 10


def test_sample_types_and_shapes() -> None:
    image, label, mask = make_sample(3, 7)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert isinstance(label, int) and label == 7
    assert mask.shape == (64, 64) and mask.dtype == bool
    image, label, mask = make_sample(3, 7, size=96)
    assert image.shape == (96, 96, 3) and mask.shape == (96, 96)


def test_sample_depends_only_on_seed_and_index() -> None:
    a = make_sample(5, 123)
    make_sample(5, 0)  # other samples in between change nothing
    make_sample(6, 123)
    b = make_sample(5, 123)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    assert a[1] == b[1]
    images, labels, masks = make_dataset(20, seed=5, start=110)
    np.testing.assert_array_equal(images[13], a[0])
    np.testing.assert_array_equal(masks[13], a[2])
    assert labels[13] == a[1]


def test_seeds_and_indices_differ() -> None:
    base = make_sample(1, 4)[0]
    assert not np.array_equal(base, make_sample(2, 4)[0])
    assert not np.array_equal(base, make_sample(1, 14)[0])


def test_dataset_contents() -> None:
    images, labels, masks = make_dataset(200, seed=11)
    assert images.shape == (200, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (200,) and labels.dtype == np.int64
    assert masks.shape == (200, 64, 64) and masks.dtype == bool
    assert set(labels.tolist()) == set(range(10))
    assert np.all(np.bincount(labels, minlength=10) == 20)
    area = masks.sum(axis=(1, 2))
    assert area.min() >= 40  # never empty, never a speck
    assert area.max() < 0.5 * 64 * 64
    # The object lies inside the image, not touching its border.
    border = masks[:, 0, :].any() or masks[:, -1, :].any()
    border = border or masks[:, :, 0].any() or masks[:, :, -1].any()
    assert not border
    # The images are cluttered: not a flat background around the object.
    outside = images.astype(np.float64)[~masks]
    assert outside.std() > 20


def test_object_not_simply_the_brightest() -> None:
    images, _, masks = make_dataset(100, seed=12)
    luminance = images.astype(np.float64).mean(axis=-1)
    brightest = luminance.reshape(100, -1).argmax(axis=1)
    on_object = masks.reshape(100, -1)[np.arange(100), brightest]
    assert on_object.mean() < 0.5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_sample(-1, 0)
    with pytest.raises(ValueError):
        make_sample(0, -1)
    with pytest.raises(ValueError):
        make_sample(0, 0, size=16)


# ---------------------------------------------------------------- metrics


def test_upsample_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    maps = rng.random((3, 4, 5)).astype(np.float32)
    ours = upsample_bilinear(maps, (64, 37))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[:, None], size=(64, 37), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_pointing_game_known_answers() -> None:
    masks = np.zeros((5, 8, 8), dtype=bool)
    masks[:, 4:8, 4:8] = True  # the object fills the bottom-right quadrant
    cams = np.zeros((5, 2, 2), dtype=np.float32)
    cams[0, 1, 1] = 1.0  # peak on the object: hit
    cams[1, 0, 0] = 1.0  # peak top-left: miss
    # cams[2] all zero: flat, a miss
    cams[3] = 5.0  # flat but non-zero: a miss
    cams[4, 1, 1] = np.nan  # not finite: a miss
    np.testing.assert_array_equal(pointing_game(cams, masks), [True, False, False, False, False])


def test_pointing_game_same_resolution_and_ties() -> None:
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, 2, 3] = True
    masks[1, 2, 2] = True
    cams = np.zeros((2, 5, 5))
    cams[0, 2, 3] = 0.9
    cams[0, 0, 0] = 0.5
    # A plateau of ties: the maximal pixel nearest their centroid is taken (the middle).
    cams[1, 1:4, 1:4] = 1.0
    np.testing.assert_array_equal(pointing_game(cams, masks), [True, True])


def test_pointing_game_upsampled_peak() -> None:
    # A 3x3 map with its peak in the middle points at the middle of a 30x30 image.
    cam = np.zeros((1, 3, 3))
    cam[0, 1, 1] = 1.0
    mask = np.zeros((1, 30, 30), dtype=bool)
    mask[0, 14:16, 14:16] = True
    assert pointing_game(cam, mask).tolist() == [True]
    mask[0, 14:16, 14:16] = False
    mask[0, 0:10, 0:10] = True
    assert pointing_game(cam, mask).tolist() == [False]


def test_pointing_game_bad_input() -> None:
    with pytest.raises(ValueError):
        pointing_game(np.zeros((2, 4, 4)), np.zeros((3, 8, 8), dtype=bool))
    with pytest.raises(ValueError):
        pointing_game(np.zeros((4, 4)), np.zeros((1, 8, 8), dtype=bool))
    with pytest.raises(ValueError):
        pointing_game(np.zeros((1, 4, 4)), np.zeros((1, 8, 8)))


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


def test_metrics_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, layerscope.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
