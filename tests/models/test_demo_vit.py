"""The built-in demo ViT (:mod:`layerscope.models.demo_vit`): timm's names, its friendly
layers, the shipped weights (size, accuracy, pointing game) and Grad-CAM at every default
layer against an independent reference (hooks + ``torch.autograd.grad`` + tokens laid out by
hand, written here)."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from layerscope.datasets import CLASS_NAMES, make_dataset
from layerscope.evaluate import pointing_game

torch = pytest.importorskip("torch")

#: Fresh samples for the accuracy check: a dataset seed never used in training.
N_CHECK = 500
#: Images for the fast pointing-game check (the slow one uses N_CHECK).
N_FAST = 100
TOL = 1e-4


@pytest.fixture(scope="module")
def vit() -> ModuleType:
    from layerscope.models import demo_vit

    return demo_vit


@pytest.fixture(scope="module")
def trained(vit: ModuleType) -> Any:
    if not vit.DEFAULT_WEIGHTS.is_file():
        pytest.skip("the demo ViT's weights are not trained yet: python -m layerscope.training.demo_vit --train")
    return vit.build()


@pytest.fixture(scope="module")
def random_model(vit: ModuleType) -> Any:
    return vit.build("random")


@pytest.fixture(scope="module", params=["random", "trained"])
def either(request: pytest.FixtureRequest) -> Any:
    """The random-weights model, and the trained one (skipped while its weights are missing)."""
    return request.getfixturevalue("random_model" if request.param == "random" else "trained")


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from layerscope.models import demo

    assert demo.EVAL_SEED != demo.TRAIN_SEED
    return make_dataset(N_CHECK, demo.EVAL_SEED, demo.IMAGE_SIZE)


def test_timm_names_and_friendly_layers(vit: ModuleType, random_model: Any) -> None:
    from torch import nn

    from layerscope.info import model_info
    from layerscope.inputs import Preprocess
    from layerscope.models import demo

    trained = random_model
    info = model_info(trained)
    tensor = ".norm1" if vit.GLOBAL_POOL == "token" else ""  # attention inputs / block outputs
    assert info.layers == {f"block{i}": f"blocks.{i - 1}{tensor}" for i in range(1, vit.DEPTH + 1)}
    modules = dict(trained.named_modules())
    for path in info.layers.values():
        assert isinstance(modules[path], nn.LayerNorm if tensor else vit.Block)
    proj = trained.patch_embed.proj  # the hybrid embedding: the demo CNN's blocks 1-3 (stride 8), then 1×1
    assert isinstance(proj, nn.Conv2d) and proj.kernel_size == (1, 1) and proj.out_channels == vit.DIM
    stem = trained.patch_embed.backbone
    assert sum(isinstance(m, nn.MaxPool2d) for m in stem) == 3 == len(vit.STEM_BLOCKS) and vit.PATCH == 8
    assert trained.cls_token.shape == (1, 1, vit.DIM) and trained.reg_token.shape == (1, vit.REGISTERS, vit.DIM)
    assert trained.num_prefix_tokens == 1 + vit.REGISTERS >= 2 and trained.num_reg_tokens == vit.REGISTERS
    assert trained.pos_embed.shape == (1, 1 + (demo.IMAGE_SIZE // vit.PATCH) ** 2, vit.DIM)
    assert isinstance(trained.blocks, nn.ModuleList) and len(trained.blocks) == vit.DEPTH
    for block in trained.blocks:
        assert isinstance(block.norm1, nn.LayerNorm) and isinstance(block.norm2, nn.LayerNorm)
        assert isinstance(block.attn.qkv, nn.Linear) and isinstance(block.attn.proj, nn.Linear)
        assert isinstance(block.attn.attn_drop, nn.Dropout) and block.attn.fused_attn is False
        assert block.attn.num_heads == vit.HEADS
        assert {"fc1", "act", "fc2"} <= set(dict(block.mlp.named_children()))
    final = trained.norm if vit.GLOBAL_POOL == "token" else trained.fc_norm  # timm's names
    assert isinstance(final, nn.LayerNorm) and trained.head.out_features == len(CLASS_NAMES)
    assert info.class_names == tuple(CLASS_NAMES) and info.output == "logits"
    assert info.preprocess == Preprocess((demo.IMAGE_SIZE, demo.IMAGE_SIZE), demo.MEAN, demo.STD)
    assert info.input_size == (demo.IMAGE_SIZE, demo.IMAGE_SIZE)
    assert ("attention input (norm1)" if tensor else "block output") in info.note and "RANDOM" in info.warning
    assert vit.info().warning is None and "RANDOM" not in vit.info().note
    assert not trained.training


def test_friendly_layers_follow_the_default_layer_rule(vit: ModuleType) -> None:
    """The shipped layers are what layerscope's rule picks for a ViT reading the class token
    (attention inputs) or averaging the patch tokens (block outputs); registers change neither."""
    from layerscope.capture.torch.layers import block_layers

    for pool, tensor in (("token", ".norm1"), ("avg", "")):
        model = vit.DemoViT(global_pool=pool)
        assert block_layers(model) == [f"blocks.{i}{tensor}" for i in range(vit.DEPTH)], pool
        assert list(vit.layers(global_pool=pool).values()) == block_layers(model)
    assert list(vit.info().layers.values()) == block_layers(vit.DemoViT())
    with pytest.raises(ValueError, match="global_pool"):
        vit.DemoViT(global_pool="max")


def _attention(model: Any, block: int, x: Any) -> Any:
    """The attention weights block ``block`` computes for ``x``, seen at its ``attn_drop``."""
    seen: list[Any] = []
    handle = model.blocks[block].attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    (attn,) = seen
    return attn


def test_attention_weights_are_seen_at_attn_drop(random_model: Any) -> None:
    trained = random_model
    attn = _attention(trained, 1, torch.zeros(2, 3, 96, 96))
    tokens = trained.num_prefix_tokens + 12 * 12  # CLS, registers, patches
    assert attn.shape == (2, trained.blocks[1].attn.num_heads, tokens, tokens)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, attn.shape[1], tokens))


def test_neighbourhood_attention(vit: ModuleType, random_model: Any) -> None:
    """A patch token attends only the patch tokens of its 3×3 neighbourhood (weight 0
    elsewhere, the class and register tokens included); the class and register tokens attend
    every token. Checked on the weights the model computes, against the grid by hand."""
    assert vit.WINDOW == 1 and random_model.window == 1
    attn = _attention(random_model, 0, torch.randn(1, 3, 96, 96))[0]  # (heads, T, T)
    prefix, grid = random_model.num_prefix_tokens, 12
    for q in (0, 1, prefix - 1):  # the class token and two registers: every key
        assert (attn[:, q] > 0).all()
    for r, c in ((0, 0), (5, 7), (11, 11), (0, 6)):
        q = prefix + r * grid + c
        keys = {prefix + rr * grid + cc for rr in range(r - 1, r + 2) for cc in range(c - 1, c + 2)
                if 0 <= rr < grid and 0 <= cc < grid}  # fmt: skip
        nonzero = set(torch.nonzero(attn[:, q].sum(0)).flatten().tolist())
        assert nonzero == keys, (r, c)
        torch.testing.assert_close(attn[:, q].sum(-1), torch.ones(attn.shape[0]))
    assert vit.neighbourhood_mask(3, 1, 0)[1:, 1:].equal(torch.eye(9, dtype=torch.bool))
    with pytest.raises(ValueError, match="window"):
        vit.neighbourhood_mask(3, 1, -1)
    # the mask is no weight: the state dict is that of global attention
    assert random_model.state_dict().keys() == vit.DemoViT(window=None).state_dict().keys()


def test_shipped_weights_are_small(vit: ModuleType, trained: Any) -> None:
    assert vit.shipped_weights().stat().st_size <= 2 * 1024 * 1024


def test_random_weights_are_deterministic_and_flagged(vit: ModuleType) -> None:
    from layerscope.info import model_info

    a, b = vit.build("random"), vit.build("random")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert "RANDOM" in model_info(a).warning and "RANDOM WEIGHTS" in model_info(a).note
    assert not torch.equal(a.head.weight, vit.build("random", seed=1).head.weight)


def test_load_model_by_name(trained: Any) -> None:
    import layerscope

    model = layerscope.load_model("demo-vit")
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), trained.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_missing_default_weights_is_a_clear_error(
    vit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from layerscope.errors import WeightsError

    monkeypatch.setattr(vit, "DEFAULT_WEIGHTS", tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match=r"training\.demo_vit --train"):
        vit.build()


def test_accuracy_on_fresh_samples(trained: Any, fresh: tuple[np.ndarray, ...]) -> None:
    from layerscope.models import demo

    images, labels, _ = fresh
    with torch.no_grad():
        pred = trained(demo.preprocess(images)).argmax(dim=1).numpy()
    assert (pred == labels).mean() >= 0.95


def _minmax(m: np.ndarray) -> np.ndarray:
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), 0.0)


def _reference_gradcam(model: Any, x: Any, paths: list[str], targets: list[int], grid: int) -> dict[str, np.ndarray]:
    """Grad-CAM from forward hooks and ``autograd.grad``: each layer's ``(N, 1 + R + grid², C)``
    tokens without the CLS and the R register tokens, laid out as ``(N, C, grid, grid)``; the
    math in float64."""
    first = 1 + model.reg_token.shape[1]
    kept: dict[str, Any] = {}
    handles = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: kept.__setitem__(p, o)) for p in paths]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(logits[range(len(targets)), targets].sum(), [kept[p] for p in paths])
    maps = {}
    for p, g in zip(paths, grads, strict=True):
        a = kept[p].detach().double().numpy()[:, first:].reshape(len(x), grid, grid, -1).transpose(0, 3, 1, 2)
        g = g.double().numpy()[:, first:].reshape(len(x), grid, grid, -1).transpose(0, 3, 1, 2)
        maps[p] = np.maximum(np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a), 0.0)
    return maps


def test_gradcam_at_every_default_layer_equals_a_reference(
    vit: ModuleType, either: Any, fresh: tuple[np.ndarray, ...]
) -> None:
    import layerscope
    from layerscope.info import model_info
    from layerscope.models import demo

    images, labels, _ = fresh
    trained = either
    x, targets = demo.preprocess(images[:8]), labels[:8].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random model's "weights are RANDOM" warning
        exp = layerscope.explain(trained, x, method="gradcam", target=targets)
    layers = model_info(trained).layers
    assert list(exp.layers) == list(layers)  # every block, by its friendly name, by default
    grid = demo.IMAGE_SIZE // vit.PATCH
    ref = _reference_gradcam(trained, x, list(layers.values()), targets, grid)
    for name, path in layers.items():
        assert exp.cams[name].shape == (8, grid, grid)
        assert np.abs(_minmax(np.asarray(exp.cams[name], np.float64)) - _minmax(ref[path])).max() <= TOL, name
        # never blocked (the point of the attention-input layers); a map can still be all
        # negative before Grad-CAM's ReLU (flat) for an image: at most one of the eight here
        assert name not in exp.blocked and ref[path].max() > 0, name
        assert exp.flat[name].sum() <= (8 if "RANDOM" in (model_info(trained).warning or "") else 1), name


def _pointing(model: Any, images: np.ndarray, labels: np.ndarray, masks: np.ndarray, method: str = "gradcam") -> float:
    import layerscope
    from layerscope.models import demo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random model's "weights are RANDOM" warning
        exp = layerscope.explain(
            model, demo.preprocess(images), layers=["block4"], method=method, target=labels.tolist()
        )
    return float(pointing_game(exp.cams["block4"], masks).mean())


def test_pointing_game_at_the_last_block(vit: ModuleType, trained: Any, fresh: tuple[np.ndarray, ...]) -> None:
    # Measured (docs/demo-vit.md), block4 on 500 images: HiResCAM 0.902, rollout 0.906,
    # Grad-CAM 0.520 (random weights: 0.078, 0.026, 0.046) — the issue's ≥ 0.80 holds for
    # the element-wise and attention methods, NOT for Grad-CAM (a class-token read-out: its
    # averaged gradient drops the class token's attention to each token); here, 100 images
    images, labels, masks = (a[:N_FAST] for a in fresh)
    random = vit.build("random")
    for method, floor in (("gradcam", 0.4), ("hirescam", 0.8), ("rollout", 0.8)):
        trained_score = _pointing(trained, images, labels, masks, method)
        random_score = _pointing(random, images, labels, masks, method)
        assert trained_score >= floor and trained_score >= 3 * random_score, (method, trained_score, random_score)


@pytest.mark.slow
def test_pointing_game_at_the_last_block_on_500_images(trained: Any, fresh: tuple[np.ndarray, ...]) -> None:
    for method, floor in (("gradcam", 0.45), ("hirescam", 0.85), ("gradcam-elementwise", 0.85), ("rollout", 0.85)):
        assert _pointing(trained, *fresh, method) >= floor, method


def test_tour_of_the_sample_has_no_flat_frame(trained: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``layerscope tour --model demo-vit``: the demo's shapes sample, one frame per block,
    none flat or blocked, the true class explained."""
    from PIL import Image

    import layerscope
    from conftest import run_cli
    from layerscope.models import demo

    out = tmp_path / "tour.gif"
    code, stdout, err = run_cli(capsys, "tour", "--model", "demo-vit", "-o", str(out))
    assert code == 0, err
    assert "4 layers" in stdout and "flat" not in stdout + err
    with Image.open(out) as im:
        assert im.n_frames == 4
    image, label, mask = demo.sample_image()
    exp = layerscope.explain(trained, image)
    assert exp.targets.tolist() == [label]
    assert not any(exp.flat[name].any() for name in exp.layers) and exp.blocked == {}
    assert exp.cams["block4"][0][mask[:: 96 // 12, :: 96 // 12]].max() > 0  # some of its map lies on the object
