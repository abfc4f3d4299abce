"""Localisation metrics: the pointing game, the energy-based pointing game, the bilinear
enlargement they share (moved here from ``test_demo.py``), and the no-framework import."""

from __future__ import annotations

import numpy as np
import pytest

from layerscope.evaluate import boxes_from_masks, energy_pointing_game, pointing_game, upsample_bilinear


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


def test_pointing_game_batch_equals_a_reference_written_here() -> None:
    """A batch mixing unique peaks, tied plateaus (peaks at the border, clamped when
    enlarged), flat, NaN and infinite maps and random masks: each hit equals the rule
    computed here map by map (torch's interpolation, the maximal pixel nearest the maximal
    pixels' centroid, a miss for a flat or non-finite map)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    cams = rng.random((40, 6, 6)).astype(np.float32)
    cams[5:15] = np.round(cams[5:15] * 2) / 2  # many equal values: ties after enlarging
    cams[15, :, :] = 0.25  # flat
    cams[16, 2, 3] = np.nan
    cams[17, 0, 0] = np.inf
    cams[18:25, 0, :] = 2.0  # a peak row on the border: a plateau when enlarged
    masks = rng.random((40, 24, 24)) < 0.4
    up = torch.nn.functional.interpolate(
        torch.from_numpy(cams.astype(np.float64))[:, None], size=(24, 24), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    expected = []
    for u, m in zip(up, masks, strict=True):
        if not np.isfinite(u).all() or u.max() <= u.min():
            expected.append(False)
            continue
        ys, xs = np.nonzero(np.isclose(u, u.max(), rtol=0, atol=1e-12))
        j = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        expected.append(bool(m[ys[j], xs[j]]))
    got = pointing_game(cams, masks)
    np.testing.assert_array_equal(got, expected)
    assert 5 < got.sum() < 35  # neither all hits nor all misses: the check can fail
    np.testing.assert_array_equal([pointing_game(c[None], m[None])[0] for c, m in zip(cams, masks, strict=True)], got)


def test_pointing_game_bad_input() -> None:
    with pytest.raises(ValueError):
        pointing_game(np.zeros((2, 4, 4)), np.zeros((3, 8, 8), dtype=bool))
    with pytest.raises(ValueError):
        pointing_game(np.zeros((4, 4)), np.zeros((1, 8, 8), dtype=bool))
    with pytest.raises(ValueError):
        pointing_game(np.zeros((1, 4, 4)), np.zeros((1, 8, 8)))


def test_energy_pointing_game_known_answers() -> None:
    masks = np.zeros((4, 4, 4), dtype=bool)
    masks[:, 0:2, 0:2] = True  # the object: the top-left 2x2 (its box is itself)
    cams = np.zeros((4, 4, 4))
    cams[0, 0, 0] = 3.0  # all energy on the object: 1
    cams[1, 0, 0], cams[1, 3, 3] = 1.0, 3.0  # 1 of 4 inside: 0.25
    cams[2] = 1.0  # uniform: the object's area, 4/16
    # cams[3] all zero: no energy, 0
    np.testing.assert_allclose(energy_pointing_game(cams, masks), [1.0, 0.25, 0.25, 0.0])


def test_energy_pointing_game_box_versus_mask() -> None:
    # An L-shaped object: its box also holds the corner it does not cover.
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0:2, 0] = True
    mask[0, 1, 0:2] = True
    np.testing.assert_array_equal(boxes_from_masks(mask)[0, 0:2, 0:2], np.ones((2, 2), bool))
    assert boxes_from_masks(mask).sum() == 4
    cam = np.zeros((1, 4, 4))
    cam[0, 0, 1] = 1.0  # in the box, not on the object
    cam[0, 1, 1] = 1.0  # on the object
    assert energy_pointing_game(cam, mask, "box").tolist() == [1.0]
    assert energy_pointing_game(cam, mask, "mask").tolist() == [0.5]
    with pytest.raises(ValueError):
        energy_pointing_game(cam, mask, "circle")


def test_energy_pointing_game_enlarges_like_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    cams = rng.random((3, 6, 6))
    masks = rng.random((3, 96, 96)) > 0.7
    up = torch.nn.functional.interpolate(torch.from_numpy(cams)[:, None], size=(96, 96), mode="bilinear")[:, 0]
    up = up.numpy()
    expected = [(u * m).sum() / u.sum() for u, m in zip(up, masks, strict=True)]
    np.testing.assert_allclose(energy_pointing_game(cams, masks, "mask"), expected, rtol=1e-9)


def test_evaluate_and_metrics_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, layerscope.evaluate; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
