"""The synthetic shapes dataset, the explanation metrics and the built-in demo model."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from layerscope.datasets import CLASS_NAMES, make_dataset, make_sample
from layerscope.evaluate import pointing_game, rank_correlation

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


# ---------------------------------------------------------------- demo model
# These need torch (an optional dependency); the tests above do not.

#: Fresh samples for the checks on the shipped weights: a dataset seed never used in training.
N_CHECK = 500


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    pytest.importorskip("torch")
    from layerscope.models import demo

    return demo


@pytest.fixture(scope="module")
def fresh(demo: ModuleType) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert demo.EVAL_SEED != demo.TRAIN_SEED
    return make_dataset(N_CHECK, demo.EVAL_SEED, demo.IMAGE_SIZE)


@pytest.fixture(scope="module")
def trained(demo: ModuleType) -> Any:
    return demo.build()


def test_model_conventions(demo: ModuleType, trained: Any) -> None:
    import torch

    from layerscope.info import model_info
    from layerscope.inputs import Preprocess

    info = model_info(trained)
    names = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]
    assert list(info.layers) == names
    modules = dict(trained.named_modules())
    for path in info.layers.values():
        assert isinstance(modules[path], torch.nn.ReLU)
    assert info.class_names == tuple(CLASS_NAMES)
    assert info.output == "logits"
    assert info.preprocess == Preprocess((demo.IMAGE_SIZE, demo.IMAGE_SIZE), demo.MEAN, demo.STD)
    assert not trained.training
    assert info.warning is None and info.note == "demo model (10 synthetic shapes)"
    assert not [k for k in vars(trained) if k.startswith("layerscope") or k == "class_names"]


def test_random_weights_are_deterministic_and_flagged(demo: ModuleType) -> None:
    import torch

    a, b = demo.build("random"), demo.build("random")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb)
    from layerscope.info import model_info

    assert "RANDOM" in model_info(a).warning and "RANDOM WEIGHTS" in model_info(a).note
    c = demo.build("random", seed=1)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_missing_default_weights_is_a_clear_error(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from layerscope.errors import WeightsError

    monkeypatch.setattr(demo, "DEFAULT_WEIGHTS", tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="--train"):
        demo.build()


def test_sample_image_is_classified(demo: ModuleType, trained: Any) -> None:
    import torch

    image, label, mask = demo.sample_image()
    assert image.size == (demo.IMAGE_SIZE, demo.IMAGE_SIZE) and image.mode == "RGB"
    assert mask.shape == (demo.IMAGE_SIZE, demo.IMAGE_SIZE) and mask.any()
    with torch.no_grad():
        pred = trained(demo.preprocess(np.asarray(image)[None])).argmax(dim=1).item()
    assert pred == label


def test_accuracy_on_fresh_samples(demo: ModuleType, trained: Any, fresh: tuple[np.ndarray, ...]) -> None:
    import torch

    images, labels, _ = fresh
    with torch.no_grad():
        pred = trained(demo.preprocess(images)).argmax(dim=1).numpy()
    assert (pred == labels).mean() >= 0.95
    assert demo.accuracy(trained, N_CHECK, seed=demo.EVAL_SEED) == (pred == labels).mean()  # the same samples


def _gradcam(demo: ModuleType, model: Any, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Grad-CAM of the true class at block5_conv3, through the public API."""
    import warnings

    import layerscope

    x = demo.preprocess(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random model's "weights are RANDOM" warning
        exp = layerscope.explain(model, x, layers=["block5_conv3"], method="gradcam", target=labels.tolist())
    np.testing.assert_array_equal(exp.targets, labels)
    return exp.cams["block5_conv3"]


def test_pointing_game_at_last_conv(demo: ModuleType, trained: Any, fresh: tuple[np.ndarray, ...]) -> None:
    images, labels, masks = fresh
    cams = _gradcam(demo, trained, images, labels)
    assert cams.shape == (N_CHECK, demo.IMAGE_SIZE // 16, demo.IMAGE_SIZE // 16)
    assert pointing_game(cams, masks).mean() >= 0.90


def test_model_randomisation_sanity_check(demo: ModuleType, trained: Any, fresh: tuple[np.ndarray, ...]) -> None:
    """Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): the maps of the
    trained net and of the same net with random weights must not be alike."""
    images, labels, _ = fresh
    rho = rank_correlation(
        _gradcam(demo, trained, images, labels), _gradcam(demo, demo.build("random"), images, labels)
    )
    assert np.isfinite(rho).mean() > 0.5  # most random-net maps are not flat
    assert np.nanmean(rho) < 0.5
