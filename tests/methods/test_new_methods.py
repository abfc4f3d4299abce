"""Finer-CAM, KPCA-CAM, FEM and ShapleyCAM, each checked against an independent
implementation written here from the paper's equation (forward hooks and autograd of our
own, numpy for the maths) at every VGG16 conv layer (random weights, a real photo), to 1e-4
after min-max; ShapleyCAM's passes counted."""

# ruff: noqa: F811 - fixtures imported from helpers_methods are test arguments
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_methods import TOL, CountPasses, _CountBackward, assert_same, net, one_thread, x  # noqa: F401
from torch import nn

import layerscope
from conftest import minmax as norm
from layerscope.errors import UsageError
from layerscope.info import ModelInfo, attach_info
from layerscope.methods import get_method
from layerscope.models import vgg

NAMES = vgg.make_features()[1]  # {block1_conv1: features.1, …}: each conv with its ReLU


def _photo(size: int) -> torch.Tensor:
    """skimage's cat photo (Chelsea), resized and ImageNet-normalised: ``(1, 3, size, size)``."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = np.asarray(Image.fromarray(data.chelsea()).resize((size, size), Image.BILINEAR), np.float32) / 255
    img = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))


@pytest.fixture(scope="module")
def model(vgg16_random: nn.Module) -> nn.Module:
    """The random-weight VGG16 (in-place ReLUs) with the friendly names of its 13 layers."""
    return attach_info(copy.deepcopy(vgg16_random), ModelInfo(layers=dict(NAMES)))


def _hooked(model: nn.Module, x: torch.Tensor, prefix: str = "") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output and every named layer's output, kept by plain forward hooks (on a copy
    with out-of-place ReLUs, so nothing changes a kept tensor)."""
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    kept: dict[str, torch.Tensor] = {}
    mods = dict(plain.named_modules())
    handles = [
        mods[prefix + p].register_forward_hook(lambda m, i, o, n=n: kept.__setitem__(n, o)) for n, p in NAMES.items()
    ]
    try:
        out = plain(x.clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    return out, kept


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _cam(weights: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.maximum(np.einsum("nc,nchw->nhw", weights, a), 0)


# --- Finer-CAM ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "weighting"), [({}, "equal"), ({"gamma": 0.6, "comparison": 2, "weighting": "probability"}, "p")]
)
def test_finercam_equals_gradcam_of_the_difference_at_every_layer(
    model: nn.Module, options: dict, weighting: str
) -> None:
    x = _photo(64)
    exp = layerscope.explain(model, x, method="finercam", **options)
    gamma, m = options.get("gamma", 1.0), options.get("comparison", 3)
    out, kept = _hooked(model, x)
    y = _np(out)[0]
    c = int(y.argmax())
    similar = [int(d) for d in np.argsort(-y)[1 : m + 1]]  # the next-highest logits
    pairs = out[0, c] - gamma * out[0, similar]
    if weighting == "equal":
        score = pairs.mean()
    else:  # pytorch-grad-cam's: softmax-weighted, differentiated through the weights
        p = torch.softmax(out[0], 0)[similar]
        score = (p * pairs).sum() / (p.sum() + 1e-9)
    grads = torch.autograd.grad(score, list(kept.values()))
    assert exp.layers == list(NAMES) and int(exp.targets[0]) == c
    for (name, a), g in zip(kept.items(), grads, strict=True):
        assert_same(exp.cams[name], _cam(_np(g).mean(axis=(2, 3)), _np(a)), f"finercam {name}")


def test_finercam_explicit_classes_gamma_zero_and_errors(model: nn.Module) -> None:
    x = _photo(32)
    plain = layerscope.explain(model, x, layers="block5_conv3", target=7)
    same = layerscope.explain(model, x, layers="block5_conv3", method="finercam", target=7, gamma=0.0)
    np.testing.assert_allclose(norm(same.cams["block5_conv3"]), norm(plain.cams["block5_conv3"]), atol=TOL)
    out, kept = _hooked(model, x)
    score = out[0, 7] - 0.5 * (out[0, 3] + out[0, 900]) / 2
    (g,) = torch.autograd.grad(score, [kept["block5_conv3"]])
    exp = layerscope.explain(
        model, x, layers="block5_conv3", method="finercam", target=7, gamma=0.5, comparison=[3, 900]
    )
    assert_same(exp.cams["block5_conv3"], _cam(_np(g).mean(axis=(2, 3)), _np(kept["block5_conv3"])), "explicit")
    for bad in ({"comparison": 0}, {"comparison": [1000]}, {"comparison": "x"}, {"weighting": "max"}):
        with pytest.raises(UsageError, match="finercam's"):
            layerscope.explain(model, x, layers="block5_conv3", method="finercam", **bad)
    with pytest.raises(UsageError, match="own score"):
        layerscope.explain(model, x, layers="block5_conv3", method="finercam", target=lambda o: o[:, 0])


# --- FEM and KPCA-CAM: activations only ----------------------------------------------------


def _fem_reference(a: np.ndarray, k: float = 2.0) -> np.ndarray:
    mu, sd = a.mean(axis=(2, 3), keepdims=True), a.std(axis=(2, 3), keepdims=True)
    return _cam((a > mu + k * sd).mean(axis=(2, 3)), a)


def _kernel(u: np.ndarray, v: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    if kernel == "rbf":
        from scipy.spatial.distance import cdist

        return np.exp(-gamma * cdist(u, v, "sqeuclidean"))
    return np.tanh(gamma * u @ v.T + 1.0)


def _kpca_reference(a: np.ndarray, kernel: str = "rbf") -> np.ndarray:
    """Kernel PCA from its definition: the centred kernel matrix's top eigenvector, projected."""
    maps = []
    for item in a:
        c, h, w = item.shape
        xs = item.reshape(c, -1).T
        xs = xs - xs.mean(axis=0)
        k = _kernel(xs, xs, kernel, 1.0 / c)
        one = np.full(k.shape, 1.0 / len(k))
        kc = k - one @ k - k @ one + one @ k @ one
        vec = np.linalg.eigh(kc)[1][:, -1]
        proj = kc @ vec
        ref = item.mean(axis=0).ravel()
        if np.dot(proj - proj.mean(), ref - ref.mean()) < 0:
            proj = -proj
        maps.append(np.maximum(proj.reshape(h, w), 0))
    return np.stack(maps)


def test_fem_and_kpcacam_follow_their_definitions_at_every_layer(model: nn.Module) -> None:
    x = _photo(32)
    _, kept = _hooked(model, x)
    fem = layerscope.explain(model, x, method="fem")
    kpca = layerscope.explain(model, x, method="kpcacam", max_positions=None)
    sig = layerscope.explain(model, x, method="kpcacam", kernel="sigmoid", max_positions=None)
    for name, a in kept.items():
        assert_same(fem.cams[name], _fem_reference(_np(a)), f"fem {name}")
        assert_same(kpca.cams[name], _kpca_reference(_np(a)), f"kpcacam {name}")
        assert_same(sig.cams[name], _kpca_reference(_np(a), "sigmoid"), f"kpcacam sigmoid {name}")
        assert kpca.cams[name].max() > 0
        # (with 2×2 positions no value can lie 2 standard deviations above the mean: FEM is 0)
        assert fem.cams[name].max() > 0 or a.shape[-1] == 2


def test_kpcacam_fits_large_layers_on_a_grid_and_projects_every_position(model: nn.Module) -> None:
    sklearn = pytest.importorskip("sklearn.decomposition")
    x = _photo(40)
    _, kept = _hooked(model, x)
    a = _np(kept["block1_conv2"])[0]  # 40×40 = 1600 positions
    exp = layerscope.explain(model, x, layers="block1_conv2", method="kpcacam", max_positions=400)
    xs = a.reshape(a.shape[0], -1).T
    xs = xs - xs.mean(axis=0)
    grid = (np.arange(0, 40, 2)[:, None] * 40 + np.arange(0, 40, 2)[None, :]).ravel()  # every 2nd row and column
    kpca = sklearn.KernelPCA(n_components=1, kernel="rbf", gamma=1.0 / a.shape[0]).fit(xs[grid])
    proj = kpca.transform(xs)[:, 0]
    ref = a.mean(axis=0).ravel()
    proj = proj if np.dot(proj - proj.mean(), ref - ref.mean()) >= 0 else -proj
    assert exp.cams["block1_conv2"].shape == (1, 40, 40)
    assert_same(exp.cams["block1_conv2"], np.maximum(proj.reshape(1, 40, 40), 0), "grid fit")
    with pytest.raises(UsageError, match="kernel must be one of"):
        layerscope.explain(model, x, layers="block1_conv2", method="kpcacam", kernel="cosine")


def test_activation_methods_need_no_backward_and_ignore_the_target(net: nn.Module, x: torch.Tensor) -> None:
    for method in ("fem", "kpcacam"):
        counted = CountPasses(net)
        _CountBackward.calls = 0
        a = layerscope.explain(counted, x, method=method, target=1)
        b = layerscope.explain(net, x, method=method, target=4)
        assert counted.forwards == 1 and _CountBackward.calls == 0 and len(a.layers) == 13
        assert all(np.array_equal(a.cams[n], b.cams[n]) for n in a.layers)
        assert a.class_agnostic


# --- ShapleyCAM ------------------------------------------------------------------------------


class _Probabilities(nn.Module):
    """The VGG16 with a softmax output, so the score has curvature (a ReLU net's logit has none)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        attach_info(self, ModelInfo(layers={n: f"body.{p}" for n, p in NAMES.items()}, output="probabilities"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.body(x) * 5.0, dim=1)  # the random net's logits are small: made sharper


def test_shapleycam_equals_per_layer_hessian_vector_products_at_every_layer(model: nn.Module) -> None:
    probs = _Probabilities(copy.deepcopy(model)).eval()
    x = _photo(32)
    calls: list[dict] = []
    grad = torch.autograd.grad

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        return grad(*args, **kwargs)

    counted = CountPasses(probs)
    _CountBackward.calls = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.autograd, "grad", counting)
        exp = layerscope.explain(counted, x, method="shapleycam")
    # one forward, one backward (with create_graph) and one double backward for all 13 layers
    assert counted.forwards == 1 and _CountBackward.calls == 1 and len(exp.layers) == 13
    assert len(calls) == 2 and calls[0].get("create_graph") and calls[1].get("is_grads_batched")

    out, kept = _hooked(probs, x, prefix="body.")
    c = int(out[0].argmax())
    acts = list(kept.values())
    grads = torch.autograd.grad(out[0, c], acts, create_graph=True)
    gradcam = layerscope.explain(probs, x, method="gradcam")
    differs = 0.0
    for (name, a), g in zip(kept.items(), grads, strict=True):
        (hvp,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), retain_graph=True)  # H_ll · A_l, layer by layer
        ref = _cam((_np(g) - 0.5 * _np(hvp)).mean(axis=(2, 3)), _np(a))
        assert_same(exp.cams[name], ref, f"shapleycam {name}")
        differs = max(differs, float(np.abs(norm(exp.cams[name]) - norm(gradcam.cams[name])).max()))
    assert differs > 0.05  # the second-order term is really there (measured 0.17)


def test_shapleycam_is_gradcam_for_a_relu_network_and_refuses_keras(net: nn.Module, x: torch.Tensor) -> None:
    a = layerscope.explain(net, x, method="shapleycam", target=[3, 5])
    b = layerscope.explain(net, x, method="gradcam", target=[3, 5])
    for n in a.layers:
        np.testing.assert_allclose(a.cams[n], b.cams[n], rtol=1e-5, atol=1e-6 * float(b.cams[n].max() + 1e-30))
    for method in ("shapleycam", "finercam"):
        with pytest.raises(UsageError, match=r"not available for Keras models: it (needs Hessian|differentiates)"):
            layerscope.explain(object(), np.zeros((1, 3, 8, 8), np.float32), method=method, framework="keras")


def test_the_new_methods_are_listed_with_their_costs() -> None:
    for name, kind in (
        ("finercam", "gradient"),
        ("shapleycam", "gradient"),
        ("kpcacam", "activation"),
        ("fem", "activation"),
    ):
        m = get_method(name)
        assert m.kind == kind and m.cost and m.title and m.summary
        assert any(str(y) in (m.fn.__doc__ or "") for y in (2020, 2024, 2025))
    assert get_method("finercam").needs == {"activations", "gradients", "score"}
    assert get_method("finercam").options == {"gamma": 1.0, "comparison": 3, "weighting": "equal"}
    assert "double backward" in get_method("shapleycam").cost and get_method("shapleycam").options == {}
    assert get_method("kpcacam").options == {"kernel": "rbf", "gamma": None, "max_positions": 1024}
    assert get_method("fem").options == {"k": 2.0}
    assert get_method("kpcacam").frameworks == get_method("fem").frameworks == ("torch", "keras")
    assert get_method("finercam").frameworks == get_method("shapleycam").frameworks == ("torch",)
