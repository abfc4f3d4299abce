"""Fusion across layers (:mod:`layerscope.methods.fusion`): LayerCAM's fusion and RefineCAM
against torchcam, Poly-CAM against its algorithm written here with torch, hand-computed
cases, no extra pass, and the errors."""

# ruff: noqa: F811 - fixtures imported from helpers_methods are test arguments
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_methods import (  # noqa: F401 - fixtures and helpers
    TARGETS,
    CountPasses,
    SmallVGG,
    _CountBackward,
    net,
    one_thread,
    paths,
    x,
    xs,
)
from torch import nn

import layerscope
from layerscope.errors import UsageError
from layerscope.methods import get_fusion, list_fusions
from layerscope.methods.fusion import fuse

#: LayerCAM's fusion and RefineCAM equal torchcam's to this (float32 rounding: measured
#: 1.2e-7 and 1.8e-7, on SmallVGG at 48² and on VGG16 at 64² alike).
AGREE = 1e-5


def _unit(m: torch.Tensor) -> torch.Tensor:
    """torchcam's min–max (ε = 1e-8), per image."""
    m = m - m.amin(dim=(-2, -1), keepdim=True)
    return m / (m.amax(dim=(-2, -1), keepdim=True) + 1e-8)


def _up(m: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# --- the registry ------------------------------------------------------------------------


def test_registry_lists_three_fusions_with_papers_and_options() -> None:
    assert list_fusions() == ["layercam-fusion", "refinecam", "polycam"]
    for name in list_fusions():
        f = get_fusion(name)
        assert f.title and f.summary and f.cost.startswith("no extra pass")
        assert any(str(y) in (f.fn.__doc__ or "") for y in range(2020, 2027)), name
    assert get_fusion("layercam-fusion").options == {"gamma": 2.0}  # the paper's γ
    assert get_fusion("refinecam").options == {}
    assert get_fusion("polycam").options == {"outlier": 0.1}


# --- against torchcam --------------------------------------------------------------------


def test_layercam_fusion_equals_torchcam_layercam_fuse_cams(net: SmallVGG, x: torch.Tensor) -> None:
    import torchcam.methods as tc

    exp = layerscope.explain(net, x, method="layercam", target=TARGETS)
    ours = exp.fused("layercam-fusion")
    with tc.LayerCAM(net, [paths(net)[n] for n in exp.layers]) as extractor:
        cams = extractor(TARGETS, net(x))  # normalised, as torchcam's fusion expects
    ref = extractor.fuse_cams(cams).numpy()
    assert ours.shape == ref.shape == (2, 48, 48) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= AGREE


def test_layercam_fusion_equals_torchcam_on_vgg16_at_64(vgg16_random: nn.Module) -> None:
    import torchcam.methods as tc

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    exp = layerscope.explain(vgg16_random, x, method="layercam", fuse="layercam-fusion")
    assert len(exp.fusion.layers) == 13
    target = int(exp.targets[0])
    with tc.LayerCAM(vgg16_random, list(exp.layers)) as extractor:
        cams = extractor(target, vgg16_random(x))
    ref = extractor.fuse_cams(cams).numpy()
    assert exp.fusion.map.shape == ref.shape == (1, 64, 64)
    assert np.abs(exp.fusion.map - ref).max() <= AGREE


def test_refinecam_equals_torchcam_and_the_formula(net: SmallVGG, x: torch.Tensor) -> None:
    import torchcam.methods as tc

    exp = layerscope.explain(net, x, method="layercam", target=TARGETS)
    ours = exp.fused("refinecam")
    with tc.RefineCAM(net, [paths(net)[n] for n in exp.layers], base_method=tc.LayerCAM) as extractor:
        (ref,) = extractor(TARGETS, net(x))
    assert np.abs(ours - ref.numpy()).max() <= AGREE
    # the definition: norm(Π up(norm(M_l))), to the largest map
    maps = [torch.from_numpy(exp.cams[n]).double() for n in exp.layers]
    prod = torch.stack([_up(_unit(m), (48, 48)) for m in maps]).prod(dim=0)
    assert np.abs(ours - _unit(prod).numpy()).max() <= AGREE


# --- Poly-CAM, its algorithm written here ----------------------------------------------------


def _polycam_reference(maps: list[torch.Tensor], outlier: float = 0.1) -> torch.Tensor:
    """Englebert et al. 2022, as their code runs it: from the deepest map, each shallower one
    locally normalised (over the patch of one coarser pixel) times the upsampled running map."""
    prev = maps[-1]
    for a in reversed(maps[:-1]):
        local = _up(_up(a, prev.shape[-2:]), a.shape[-2:])
        a = a / torch.clamp(local, min=1e-12)
        prev = torch.relu(a * _up(prev, a.shape[-2:]))
    flat = prev.flatten(1).numpy()
    lo = torch.from_numpy(np.percentile(flat, outlier, axis=1)).view(-1, 1, 1)
    hi = torch.from_numpy(np.percentile(flat, 100 - outlier, axis=1)).view(-1, 1, 1)
    return ((prev - lo) / (hi - lo)).clamp(0, 1)


def test_polycam_follows_the_paper_on_the_deepest_layer_of_each_size(net: SmallVGG, x: torch.Tensor) -> None:
    exp = layerscope.explain(net, x, method="layercam", target=TARGETS)
    ours = exp.fused("polycam")
    assert exp.fusion.layers == ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
    ref = _polycam_reference([torch.from_numpy(exp.cams[n]).double() for n in exp.fusion.layers])
    assert ours.shape == (2, 48, 48)
    assert np.abs(ours - ref.numpy()).max() <= AGREE
    assert ours.min() >= 0 and ours.max() == pytest.approx(1.0)
    assert exp.fusion.caption == "Fused: Poly-CAM of 5 layers"
    # a flat deepest map (Grad-CAM's, ReLU'd to 0) makes every product 0: a finite, flat map
    flat = fuse("polycam", [np.ones((2, 8, 8)), np.zeros((2, 4, 4))])
    assert np.array_equal(flat, np.zeros((2, 8, 8)))


# --- hand-computed ---------------------------------------------------------------------------


def test_layercam_fusion_and_refinecam_by_hand() -> None:
    # two 2×2 maps: [[0, 1], [2, 4]] normalises to [[0, .25], [.5, 1]]; [[4, 0], [0, 0]] to [[1, 0], [0, 0]]
    a = np.array([[[0.0, 1.0], [2.0, 4.0]]], np.float32)
    b = np.array([[[4.0, 0.0], [0.0, 0.0]]], np.float32)
    na = np.array([[0.0, 0.25], [0.5, 1.0]]) * 4 / (4 + 1e-8)
    nb = np.array([[1.0, 0.0], [0.0, 0.0]]) * 4 / (4 + 1e-8)
    np.testing.assert_allclose(fuse("layercam-fusion", [a, b])[0], np.maximum(np.tanh(2 * na), np.tanh(2 * nb)), 1e-6)
    np.testing.assert_allclose(fuse("layercam-fusion", [a, b], gamma=1.0)[0], np.tanh(np.maximum(na, nb)), 1e-6)
    # the product is 0 everywhere but where both agree: nowhere here → a flat 0 map
    np.testing.assert_array_equal(fuse("refinecam", [a, b])[0], np.zeros((2, 2)))
    # a 1×2 map [0, 2] → [0, 1], enlarged to 2×2 (rows repeated); a flat map normalises to 0
    np.testing.assert_allclose(fuse("refinecam", [a, np.array([[[0.0, 2.0]]])])[0], [[0, 0.25], [0, 1]], atol=1e-6)
    assert not fuse("refinecam", [a, np.full((1, 1, 1), 3.0)]).any()


def test_polycam_by_hand_upsamples_and_multiplies() -> None:
    # deep 1×1 map 2, shallow 2×2 map s: LNorm divides s by its mean (shrunk to 1×1, bilinear
    # at the centre = the mean of 2×2), times the constant 2, then min–max (outlier 0).
    s = np.array([[[1.0, 3.0], [0.0, 4.0]]], np.float32)
    deep = np.full((1, 1, 1), 2.0, np.float32)
    got = fuse("polycam", [s, deep], outlier=0.0)[0]
    np.testing.assert_allclose(got, s[0] / 4.0, atol=1e-6)


# --- no extra pass -------------------------------------------------------------------------------


def test_fusion_costs_no_pass(net: SmallVGG, x: torch.Tensor) -> None:
    counted = CountPasses(net)
    _CountBackward.calls = 0
    exp = layerscope.explain(counted, x, method="layercam", target=TARGETS, fuse="layercam-fusion")
    assert (counted.forwards, _CountBackward.calls) == (1, 1)
    for name in list_fusions():
        exp.fused(name)
    assert (counted.forwards, counted.images, _CountBackward.calls) == (1, 2, 1)


# --- errors --------------------------------------------------------------------------------------


def test_unknown_fusion_lists_close_matches_before_any_pass(net: SmallVGG, x: torch.Tensor) -> None:
    counted = CountPasses(net)
    with pytest.raises(UsageError, match=r"unknown fusion 'layercam-fusoin'\. Did you mean layercam-fusion\?"):
        layerscope.explain(counted, x, target=TARGETS, fuse="layercam-fusoin")
    with pytest.raises(UsageError, match="Valid fusions: layercam-fusion, refinecam, polycam"):
        get_fusion("poly")
    with pytest.raises(UsageError, match="at least 2 layers; 1 chosen"):
        layerscope.explain(counted, x, layers="block5_conv3", target=TARGETS, fuse="refinecam")
    assert counted.forwards == 0


def test_fewer_than_two_layers_and_bad_options(net: SmallVGG, x: torch.Tensor) -> None:
    exp = layerscope.explain(net, x, target=TARGETS)
    with pytest.raises(UsageError, match="at least 2 layers; got 1"):
        exp.fused("layercam-fusion", layers=["block5_conv3"])
    with pytest.raises(UsageError, match="at least 2 layers of different sizes; got 1"):
        exp.fused("polycam", layers=["block5_conv1", "block5_conv3"])
    with pytest.raises(UsageError, match="Did you mean block5_conv3"):
        exp.fused(layers=["block5_conv3", "block5_cnv3"])
    with pytest.raises(UsageError, match="no option alpha; its options: gamma"):
        exp.fused("layercam-fusion", alpha=1.0)
    with pytest.raises(UsageError, match="gamma must be positive"):
        exp.fused("layercam-fusion", gamma=0.0)
    assert exp.fusion is None  # nothing kept from a failed call


def test_a_perturbation_methods_maps_fuse_without_a_word(net: SmallVGG, xs: torch.Tensor) -> None:
    layers = ["block4_conv3", "block5_conv3"]
    exp = layerscope.explain(net, xs, layers=layers, method="ablationcam", target=TARGETS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = exp.fused("refinecam", keep=False)
    assert out.shape == (2, 4, 4) and np.isfinite(out).all() and exp.fusion is None


def test_fused_layers_subset_in_forward_order_and_size(net: SmallVGG, x: torch.Tensor) -> None:
    exp = layerscope.explain(net, x, method="layercam", target=TARGETS)
    out = exp.fused("layercam-fusion", layers=["block5_conv3", "block3_conv1"], size=(48, 48), gamma=3.0)
    assert out.shape == (2, 48, 48)
    assert exp.fusion.layers == ("block3_conv1", "block5_conv3") and exp.fusion.options == {"gamma": 3.0}
    maps = [torch.from_numpy(exp.cams[n]).double() for n in exp.fusion.layers]
    ref = torch.stack([_up(torch.tanh(3.0 * _unit(m)), (48, 48)) for m in maps]).amax(dim=0)
    assert np.abs(out - ref.numpy()).max() <= AGREE
