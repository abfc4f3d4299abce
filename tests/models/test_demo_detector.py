"""The built-in demo detector (issue 21 item 2): torchvision's output format, differentiable
scores, decoding by hand, the shipped weights (size, mAP@0.5 on fresh scenes), and Grad-CAM
of one detection at every default layer against hooks + autograd in one forward and one
backward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import layerscope
from conftest import hooked_gradcam, minmax
from layerscope.datasets.scenes import make_scene
from layerscope.info import model_info
from layerscope.models import demo_detector as D

#: mAP@0.5 the shipped weights must reach on 300 fresh scenes (measured: see docs/demo-detector.md).
MIN_MAP50 = 0.80


@pytest.fixture(scope="module")
def detector() -> D.DemoDetector:
    return layerscope.load_model("demo-detector")


def test_forward_gives_torchvision_style_detections(detector: D.DemoDetector) -> None:
    image = make_scene(D.SAMPLE_SEED, 0)[0]
    out = detector(D.preprocess(np.stack([image, image])))
    assert isinstance(out, list) and len(out) == 2
    for d in out:
        assert set(d) == {"boxes", "labels", "scores"}
        k = len(d["scores"])
        assert d["boxes"].shape == (k, 4) and d["boxes"].dtype == torch.float32
        assert d["labels"].shape == (k,) and d["labels"].dtype == torch.int64
        assert d["scores"].shape == (k,) and d["scores"].requires_grad  # differentiable w.r.t. the features
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])  # best first
        assert torch.all(d["boxes"][:, 2:] >= d["boxes"][:, :2])
    raw = detector.raw(D.preprocess(image[None]))
    assert raw["heatmap"].shape == (1, 10, 16, 16) and raw["box"].shape == (1, 4, 16, 16)


def test_decode_by_hand() -> None:
    heat = torch.full((1, 10, 16, 16), -10.0)
    heat[0, 3, 5, 7] = 2.0
    heat[0, 3, 5, 8] = 1.0  # beside a higher peak: not a local maximum
    heat[0, 1, 2, 2] = 0.0
    box = torch.zeros(1, 4, 16, 16)
    box[0, :, 5, 7] = torch.tensor([math.log(3), math.log(2), 0.5, 0.25])
    out = D.decode({"heatmap": heat, "box": box}, 128, 128)[0]
    assert out["labels"].tolist() == [3, 1]
    torch.testing.assert_close(out["scores"], torch.sigmoid(torch.tensor([2.0, 0.0])))
    # centre ((7 + 0.5) · 8, (5 + 0.25) · 8) = (60, 42); 3 × 2 cells = 24 × 16 pixels
    torch.testing.assert_close(out["boxes"][0], torch.tensor([48.0, 34.0, 72.0, 50.0]))
    # zeros: a 1 × 1-cell box centred on the corner (2 · 8, 2 · 8) of its cell
    torch.testing.assert_close(out["boxes"][1], torch.tensor([12.0, 12.0, 20.0, 20.0]))
    assert D.decode({"heatmap": heat, "box": box}, 128, 128, threshold=0.6)[0]["labels"].tolist() == [3]


def test_shipped_weights_are_small_and_load_by_name(detector: D.DemoDetector) -> None:
    assert D.DEFAULT_WEIGHTS.stat().st_size <= 3 * 2**20
    info = model_info(detector)
    assert info.name == "demo-detector" and info.warning is None and len(info.class_names) == 10
    assert list(info.layers)[-3:] == ["conv8", "neck", "heat_conv"] and len(info.layers) == 10
    assert not detector.training
    random = layerscope.load_model("demo-detector", weights="random")
    assert model_info(random).warning is not None


def test_shipped_weights_map50_on_fresh_scenes(detector: D.DemoDetector) -> None:
    assert D.map50(detector, 300) >= MIN_MAP50


def test_gradcam_of_one_detection_equals_hooks_and_autograd(
    detector: D.DemoDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layerscope.evaluate.boxes import MatchedDetection

    image = make_scene(D.SAMPLE_SEED, 3)[0]
    x = D.preprocess(image[None])
    with torch.no_grad():
        dets = detector(x)[0]
    k = 1 if len(dets["scores"]) > 1 else 0  # not just the top one
    box, label = dets["boxes"][k].numpy(), int(dets["labels"][k])
    paths = list(model_info(detector).layers.values())
    ref = hooked_gradcam(detector, paths, lambda: detector(x), lambda out: out[0]["scores"][k])

    forwards, grads = [], []
    handle = detector.register_forward_pre_hook(lambda m, a: forwards.append(1))
    real_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **kw: grads.append(1) or real_grad(*a, **kw))
    try:
        exp = layerscope.explain(detector, x, target=MatchedDetection([box], [label]))
    finally:
        handle.remove()
    assert len(forwards) == 1 and len(grads) == 1  # one forward, one backward, all 10 layers
    assert exp.layers == list(model_info(detector).layers)
    assert exp.scores[0] == pytest.approx(float(dets["scores"][k]), rel=1e-6)
    for name, path in zip(exp.layers, paths, strict=True):
        scale = max(1.0, float(ref[path].max()))
        assert np.abs(exp.cams[name] - ref[path]).max() <= 1e-4 * scale, name
        assert np.abs(minmax(exp.cams[name]) - minmax(ref[path])).max() <= 1e-4, name
    assert not exp.flat["heat_conv"][0]


def test_plain_explain_explains_the_best_detection(detector: D.DemoDetector) -> None:
    image, _, _ = make_scene(D.SAMPLE_SEED, 3)
    x = D.preprocess(image[None])
    with torch.no_grad():
        best = detector(x)[0]
    exp = layerscope.explain(detector, x, layers="heatmap")
    assert int(exp.targets[0]) == int(best["labels"][0])
    assert exp.probabilities.shape == (1,)


def test_box_target_gradcam_at_every_layer_equals_hooks_and_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 21: ``targets.box`` on demo-detector, every default layer, against the box score
    ``Σ_{matched d} (score_d + IoU(box_d, b))`` and Grad-CAM written here, one backward pass."""
    import torch

    import layerscope
    from layerscope.info import model_info
    from layerscope.models import demo_detector
    from layerscope.targets import box

    model = layerscope.load_model("demo-detector")
    image, (gt_boxes, gt_labels) = demo_detector.sample_image()
    b, label = [float(v) for v in gt_boxes[0]], int(gt_labels[0])
    paths = model_info(model).layers
    calls: list[int] = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    exp = layerscope.explain(model, image, target=box(b, label=label))
    assert calls == [1] and list(exp.layers) == list(paths)
    monkeypatch.setattr(torch.autograd, "grad", real)

    kept: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: kept.__setitem__(p, o))
        for p in paths.values()
    ]
    try:
        (det,) = model(demo_detector.preprocess(np.asarray(image)[None]))
    finally:
        for h in handles:
            h.remove()
    x0, y0, x1, y1 = det["boxes"].unbind(1)
    iw = (torch.minimum(x1, torch.tensor(b[2])) - torch.maximum(x0, torch.tensor(b[0]))).clamp(min=0)
    ih = (torch.minimum(y1, torch.tensor(b[3])) - torch.maximum(y0, torch.tensor(b[1]))).clamp(min=0)
    inter = iw * ih
    iou = inter / ((x1 - x0) * (y1 - y0) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    matched = (iou >= 0.5) & (det["labels"] == label)
    assert matched.any()
    score = (det["scores"][matched] + iou[matched]).sum()
    grads = torch.autograd.grad(score, [kept[p] for p in paths.values()])
    for (name, path), g in zip(paths.items(), grads, strict=True):
        a = kept[path].detach().double()
        ref = torch.relu((g.double().mean(dim=(2, 3), keepdim=True) * a).sum(1)).numpy()
        got = exp.cams[name]
        np.testing.assert_allclose(_mm(got), _mm(ref), atol=1e-4, err_msg=name)


def _mm(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    lo, hi = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
    return (a - lo) / np.where(hi > lo, hi - lo, 1)
