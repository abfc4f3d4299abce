"""The detector targets: box() and detections() — scores by hand, every-layer Grad-CAM against
an independent computation, one pass for k detections, Eigen-CAM on detector outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import layerscope
from helpers_detector import FORMATS, TinyDetector, hand_detections, image, iou
from layerscope.errors import UsageError
from layerscope.grid import explain_many
from layerscope.targets import box, detections
from layerscope.targets._detections import box_iou, nms, parse


def _fmt(fmt: str) -> dict:
    if fmt == "torchvision":
        return {}
    return {"format": "yolo", "conf": 0.0, "objectness": fmt == "yolo5"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_box_score_is_class_score_plus_iou(fmt: str) -> None:
    model = TinyDetector(fmt).eval()
    x = image()
    dets = hand_detections(model, x)
    b, label, s = dets[4]
    given = b + np.array([0.6, -0.4, 0.9, 0.3])
    want = s + iou(b, given)
    with torch.no_grad():
        got = box(tuple(given), label=label, **_fmt(fmt))(model(x))
    assert got.shape == (1,)
    assert abs(float(got[0]) - want) < 1e-5
    # the wrong label, or any label
    with pytest.warns(UserWarning, match="no detection matches"):
        zero = box(tuple(given), label=(label + 1) % 3, **_fmt(fmt))(model(x))
    assert float(zero[0]) == 0.0
    with torch.no_grad():
        anyl = box(tuple(given), **_fmt(fmt))(model(x))
    assert abs(float(anyl[0]) - want) < 1e-5


def test_yolo_layouts_read_alike() -> None:
    x = image()
    five = parse(TinyDetector("yolo5")(x), format="yolo", conf=0.0, objectness=True)
    assert torch.equal(
        parse(TinyDetector("yolo5")(x), format="yolo", conf=0.0, layout="anchors-first")[0]["labels"], five[0]["labels"]
    )
    tv = parse(TinyDetector("torchvision")(x))
    assert torch.allclose(five[0]["boxes"], tv[0]["boxes"], atol=1e-5)
    assert torch.equal(five[0]["labels"], tv[0]["labels"])
    assert torch.allclose(five[0]["scores"], tv[0]["scores"], atol=1e-6)
    eight = parse(TinyDetector("yolo8")(x), format="yolo", conf=0.0, objectness=False)  # channels first
    by_x = lambda d: d["boxes"][torch.argsort(d["boxes"][:, 0])]  # noqa: E731 (other scores, other order)
    assert torch.allclose(by_x(eight[0]), by_x(tv[0]), atol=1e-5)
    # xyxy boxes, objectness given explicitly
    raw = torch.tensor([[[2.0, 2.0, 10.0, 12.0, 0.5, 0.1, 0.8]]])
    (d,) = parse(raw, format="yolo", box_format="xyxy", objectness=True, conf=0.0)
    assert d["boxes"].tolist() == [[2.0, 2.0, 10.0, 12.0]]
    assert d["labels"].tolist() == [1] and abs(float(d["scores"][0]) - 0.4) < 1e-6
    (d,) = parse(raw, format="yolo", box_format="xyxy", objectness=False, conf=0.0, layout="anchors-first")
    assert d["labels"].tolist() == [2] and abs(float(d["scores"][0]) - 0.8) < 1e-6


def test_sum_of_matches_labels_and_best_rule() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20, 20, 30, 30]])
    out = [{"boxes": boxes, "labels": torch.tensor([1, 1, 2, 1]), "scores": torch.tensor([0.9, 0.6, 0.7, 0.8])}]
    b = (0.0, 0.0, 10.0, 10.0)
    assert abs(float(box(b, label=1)(out)[0]) - (0.9 + 1.0 + 0.6 + 0.9)) < 1e-6
    assert abs(float(box(b)(out)[0]) - (0.9 + 1 + 0.6 + 0.9 + 0.7 + 1)) < 1e-6
    assert abs(float(box(b, label=1, match="best")(out)[0]) - 1.9) < 1e-6
    assert abs(float(box(b, label=1, iou=0.95)(out)[0]) - 1.9) < 1e-6
    assert float(box_iou(boxes, torch.tensor(b))[1]) == pytest.approx(0.9)
    keep = nms(boxes, torch.tensor([0.9, 0.6, 0.7, 0.8]), torch.tensor([1, 1, 2, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 2, 3]


def test_box_arguments_checked() -> None:
    for bad in [(1, 2, 3), (5, 5, 2, 9), ((0, 0, 1, 1), (0, 0, 1))]:
        with pytest.raises(UsageError, match="box"):
            box(bad)
    with pytest.raises(UsageError, match="label"):
        box((0, 0, 4, 4), label=True)
    with pytest.raises(UsageError, match="iou"):
        box((0, 0, 4, 4), iou=0)
    with pytest.raises(UsageError, match="match"):
        box((0, 0, 4, 4), match="some")
    with pytest.raises(UsageError, match="k="):
        detections(0)
    with pytest.raises(UsageError, match="not detections"):
        box((0, 0, 4, 4))(torch.zeros(2, 5))


def _independent_gradcam(model: TinyDetector, x: torch.Tensor, given: np.ndarray, label: int) -> dict:
    """Grad-CAM at conv1 and conv2 with hooks and autograd written here."""
    acts: dict[str, torch.Tensor] = {}
    hs = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in ("conv1", "conv2")
    ]
    try:
        out = model(x)[0]
    finally:
        for h in hs:
            h.remove()
    b = torch.tensor(given, dtype=torch.float32)
    lt, rb = torch.maximum(out["boxes"][:, :2], b[:2]), torch.minimum(out["boxes"][:, 2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = (out["boxes"][:, 2:] - out["boxes"][:, :2]).prod(dim=1)
    ious = inter / (area + (b[2:] - b[:2]).prod() - inter)
    ok = (ious >= 0.5) & (out["labels"] == label)
    score = (out["scores"][ok] + ious[ok]).sum()
    grads = torch.autograd.grad(score, [acts["conv1"], acts["conv2"]])
    return {
        n: torch.relu((g.mean(dim=(2, 3), keepdim=True) * acts[n]).sum(dim=1)).detach().numpy()
        for n, g in zip(("conv1", "conv2"), grads, strict=True)
    }


def test_gradcam_every_layer_equals_independent_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    model = TinyDetector("torchvision").eval()
    x = image()
    b, label, _ = hand_detections(model, x)[1]
    given = b + np.array([0.5, 0.5, -0.5, 0.2])
    want = _independent_gradcam(model, x, given, label)
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.forwards = 0
    exp = layerscope.explain(model, x, method="gradcam", target=box(tuple(given), label=label))
    assert model.forwards == 1 and len(calls) == 1
    assert exp.layers == ["conv1", "conv2"]
    for n in exp.layers:
        assert np.abs(exp.cams[n][0] - want[n][0]).max() <= 1e-4 * max(1.0, float(np.abs(want[n]).max()))
        assert want[n].max() > 0
    rec = exp.detections[0]
    assert rec["boxes"].shape == (6, 4) and rec["size"] == (32, 32)
    assert rec["explained"]["matched"] == 1 and rec["explained"]["label"] == label
    assert exp.target_kind == "box"
    assert exp.target_caption(0).startswith("Box: (")
    assert f"label {label} (p = " in exp.target_caption(0)
    assert float(exp.probabilities[0]) == pytest.approx(rec["explained"]["score"], abs=1e-6)


def test_top_detections_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    model = TinyDetector("yolo8").eval()
    x = image()
    hand = sorted(hand_detections(model, x), key=lambda d: -d[2])
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.forwards = 0
    exps = explain_many(model, x, targets=detections(3, **_fmt("yolo8")))
    assert model.forwards == 1 and len(calls) == 1
    assert len(exps) == 3
    for e, (b, label, s) in zip(exps, hand[:3], strict=True):
        ex = e.detections[0]["explained"]
        assert np.allclose(ex["box"], b, atol=1e-5) and ex["label"] == label
        assert float(e.scores[0]) == pytest.approx(s + 1.0, abs=1e-5)  # its own score + IoU 1
        assert float(e.probabilities[0]) == pytest.approx(s, abs=1e-6)
    # each equals the box target's explanation of that detection
    ex = exps[2].detections[0]["explained"]  # the same float32 box: the same ties in the IoU's min/max
    one = layerscope.explain(model, x, target=box(tuple(ex["box"]), label=ex["label"], **_fmt("yolo8")))
    for n in one.layers:
        assert np.abs(one.cams[n] - exps[2].cams[n]).max() <= 1e-4 * float(np.abs(one.cams[n]).max())
    assert len({e.class_name(0) for e in exps}) == 3


def test_detections_count_and_missing_rank() -> None:
    model = TinyDetector("torchvision").eval()
    x = image()
    with pytest.raises(UsageError, match="explain_many"):
        layerscope.explain(model, x, target=detections(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exps = explain_many(model, x, targets=detections(8))
    assert len(exps) == 6  # ranks the image does not have are left out
    assert any("flat" in str(w.message) for w in caught)


def test_eigencam_on_detector_outputs() -> None:
    x = image()
    tv = TinyDetector("torchvision").eval()
    exp = layerscope.explain(tv, x, method="eigencam")
    assert exp.layers == ["conv1", "conv2"] and exp.detections[0]["explained"] is None
    assert exp.detections[0]["boxes"].shape == (6, 4)
    assert all(np.isfinite(exp.cams[n]).all() and exp.cams[n].max() > 0 for n in exp.layers)
    yolo = TinyDetector("yolo5").eval()
    with pytest.raises(layerscope.errors.ModelError, match="format='yolo'"):
        layerscope.explain(yolo, x, method="eigencam")
    ey = layerscope.explain(yolo, x, method="eigencam", target=detections(1, format="yolo", conf=0, objectness=True))
    for n in exp.layers:
        assert np.allclose(ey.cams[n], exp.cams[n], atol=1e-5)  # activations only: the same maps
    assert ey.detections[0]["explained"] is not None


def test_class_target_on_a_torchvision_detector() -> None:
    model = TinyDetector("torchvision").eval()
    x = image()
    dets = hand_detections(model, x)
    label = dets[0][1]
    exp = layerscope.explain(model, x, target=label)
    best = max(s for _, lab, s in dets if lab == label)
    assert float(exp.scores[0]) == pytest.approx(best, abs=1e-6)
    assert float(exp.probabilities[0]) == pytest.approx(best, abs=1e-6)
