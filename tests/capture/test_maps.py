"""The framework-neutral end of a capture (:mod:`layerscope.capture._maps`): the output
finiteness check, the one-buffer host transfer, and the one maps collector — literal answers."""

from __future__ import annotations

import numpy as np
import pytest

from layerscope.capture._maps import Maps, NumpyOps, check_outputs_finite, host_transfer
from layerscope.errors import ModelError


def test_finite_outputs_pass_and_nan_or_inf_names_the_first_bad_image() -> None:
    check_outputs_finite(np.zeros((3, 4), np.float32))
    bad = np.zeros((3, 4), np.float32)
    bad[1, 2], bad[2, 0] = np.nan, np.inf
    with pytest.raises(ModelError, match=r"NaN or inf for image 1 \(2 of 3 images\)"):
        check_outputs_finite(bad)


def test_host_transfer_splits_one_buffer_back_into_the_arrays() -> None:
    maps = {
        "a": np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32),  # (1, 2, 2)
        "b": np.array([[[np.nan, 5.0, np.inf]]], np.float32),  # (1, 1, 3): NaN/inf → 0, flagged
    }
    outputs = np.array([[0.5, -1.5, 2.0]], np.float32)
    targets = np.array([2])
    cams, nonfinite, out, tgt = host_transfer(maps, outputs, targets, NumpyOps())
    assert list(cams) == ["a", "b"] and nonfinite == ["b"]
    np.testing.assert_array_equal(cams["a"], maps["a"])
    np.testing.assert_array_equal(cams["b"], [[[0.0, 5.0, 0.0]]])
    np.testing.assert_array_equal(out, outputs)
    assert tgt.dtype == np.int64 and tgt.tolist() == [2]
    assert cams["a"].base is None  # copies, not views of the shared buffer


class CountingOps(NumpyOps):
    def __init__(self) -> None:
        self.copies = 0

    def to_numpy(self, buf):
        self.copies += 1
        return super().to_numpy(buf)


def test_host_transfer_is_one_copy_whatever_the_number_of_maps() -> None:
    ops = CountingOps()
    maps = {f"l{i}": np.full((2, 3, 3), i, np.float32) for i in range(13)}
    cams, _, _, _ = host_transfer(maps, np.zeros((2, 10), np.float32), np.array([1, 7]), ops)
    assert ops.copies == 1 and [float(cams[f"l{i}"][1, 2, 2]) for i in (0, 12)] == [0.0, 12.0]


def test_torch_transfer_equals_the_numpy_one() -> None:
    torch = pytest.importorskip("torch")
    from layerscope.capture._autograd import maps_to_host

    rng = np.random.default_rng(0)
    maps = {"a": rng.random((2, 4, 4)).astype(np.float32), "b": rng.random((2, 7, 7)).astype(np.float32)}
    maps["b"][0, 1, 1] = np.nan
    outputs, targets = rng.random((2, 5)).astype(np.float32), np.array([4, 0])
    want = host_transfer(maps, outputs, targets, NumpyOps())
    got = maps_to_host(
        {k: torch.from_numpy(v) for k, v in maps.items()}, torch.from_numpy(outputs), torch.from_numpy(targets)
    )
    for w, g in zip(want[0].values(), got[0].values(), strict=True):
        np.testing.assert_array_equal(w, g)
    assert want[1] == got[1] == ["b"]
    np.testing.assert_array_equal(want[2], got[2])
    np.testing.assert_array_equal(want[3], got[3])


class Lay:
    """A layout: channels last → channels first, with a caption note."""

    note = "channels-last 2×2×3"

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return t.transpose(0, 3, 1, 2)


def test_maps_collector_lays_out_computes_and_finishes() -> None:
    calls: list[tuple[tuple[int, ...], tuple[int, ...] | None, dict]] = []

    def fn(a, g, **context):
        calls.append((a.shape, None if g is None else g.shape, context))
        return a.sum(axis=1) * (1.0 if g is None else g.mean())

    maps = Maps(fn, NumpyOps(), context={"k": 1}, layouts={"nhwc": Lay()})
    act = np.ones((1, 2, 2, 3), np.float32)  # (N, h, w, C)
    maps.keep("nhwc", act, np.full_like(act, 2.0))
    maps.keep("plain", np.ones((1, 4, 2, 2), np.float32), None)
    result = maps.finish(["nhwc", "plain"], np.array([[1.0, 3.0]], np.float32), np.array([1]))
    assert calls == [((1, 3, 2, 2), (1, 3, 2, 2), {"k": 1}), ((1, 4, 2, 2), None, {"k": 1})]
    np.testing.assert_array_equal(result.cams["nhwc"], np.full((1, 2, 2), 6.0))  # 3 channels × mean 2
    np.testing.assert_array_equal(result.cams["plain"], np.full((1, 2, 2), 4.0))
    assert result.shapes == {"nhwc": (2, 2, 3), "plain": (4, 2, 2)}  # the layer's own layout
    assert result.grids == {"nhwc": "channels-last 2×2×3"} and result.blocked == {}
    assert maps.maps == {}  # the device maps are let go


def test_custom_scores_travel_as_one_more_column() -> None:
    maps = Maps(lambda a, g: a[:, 0], NumpyOps())
    maps.keep("l", np.ones((2, 1, 1, 1), np.float32), None)
    result = maps.finish(
        ["l"],
        np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        np.array([0, 1]),
        scores=np.array([9.0, 8.0], np.float32),
        join=lambda out, s: np.concatenate([out, s[:, None]], axis=1),
    )
    np.testing.assert_array_equal(result.outputs, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(result.scores, [9.0, 8.0])


class Tokens:
    """A token layout with a cut-off flag: 1 when only the first (class) token has a gradient."""

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return t[:, 1:, :].transpose(0, 2, 1)[..., None]  # (N, C, T-1, 1)

    def cut_off(self, g: np.ndarray) -> np.ndarray:
        return np.asarray((np.abs(g[:, 1:]).max() == 0) & (np.abs(g[:, :1]).max() > 0), np.float32)


def test_a_layer_whose_gradient_reaches_only_the_class_token_is_reported_blocked() -> None:
    maps = Maps(lambda a, g: (a * g).sum(axis=1), NumpyOps(), layouts={"last": Tokens(), "mid": Tokens()})
    act = np.ones((1, 5, 2), np.float32)  # (N, T, C): 1 class token + 4 patch tokens
    only_cls = np.zeros_like(act)
    only_cls[:, 0] = 1.0
    maps.keep("mid", act, np.ones_like(act))
    maps.keep("last", act, only_cls)
    result = maps.finish(["mid", "last"], np.zeros((1, 2), np.float32), np.array([0]))
    assert result.blocked == {"last": "patch tokens"} and result.nonfinite == []
    assert list(result.cams) == ["mid", "last"]  # the flags are not maps
    np.testing.assert_array_equal(result.cams["last"], np.zeros((1, 4, 1)))
