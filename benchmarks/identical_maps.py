"""Are the maps of a refactored tree bit-identical to an older tree's?

Runs four tours through the public API only — a 13-layer VGG16 (the seed recipe's Grad-CAM
with guided gradients, and the other one-pass methods), a ResNet-50, a ViT built from a small
``transformers`` config (every block), and the Keras twin of ``vgg16-cifar10`` — on seeded
random weights and seeded images, and saves every map to one ``.npz``. Run it once per tree
and compare::

    PYTHONPATH=/path/to/old/src python benchmarks/identical_maps.py --out old.npz
    PYTHONPATH=src              python benchmarks/identical_maps.py --out new.npz
    python benchmarks/identical_maps.py --compare old.npz new.npz

``--compare`` exits 1 unless both files hold the same keys and every array is equal bit for
bit (``np.array_equal`` on the raw float32 values, NaN-free by construction).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

ONE_PASS = [
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "gradcam-elementwise",
    "eigengradcam",
    "eigencam",
]


def _images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Seeded images with structure (smooth blobs plus noise), uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.zeros((size, size, 3))
        for _ in range(4):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(0, 1, 3)
        img = img / img.max() * 200 + rng.uniform(0, 55, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _add(store: dict[str, np.ndarray], prefix: str, exp) -> None:
    for layer in exp.layers:
        store[f"{prefix}/{layer}"] = np.asarray(exp.cams[layer], dtype=np.float32)
    store[f"{prefix}/@targets"] = np.asarray(exp.targets)


def run() -> dict[str, np.ndarray]:
    import torch

    import layerscope
    from layerscope.models import load_model

    torch.manual_seed(0)
    store: dict[str, np.ndarray] = {}
    imgs = _images(2, 224, seed=1)

    vgg = load_model("vgg16", weights="random", seed=0)
    _add(store, "vgg16/gradcam-guided", layerscope.explain(vgg, imgs, method="gradcam", guided_grads=True))
    for m in ONE_PASS:
        _add(store, f"vgg16/{m}", layerscope.explain(vgg, imgs, method=m))
    _add(
        store, "vgg16/guided-gradcam", layerscope.explain(vgg, imgs[:1], method="guided-gradcam", layers="block5_conv3")
    )
    _add(store, "vgg16/scorecam", layerscope.explain(vgg, imgs[:1], method="scorecam", layers="block5_conv3"))
    del vgg

    resnet = load_model("resnet50", weights="random", seed=0)
    for m in ("gradcam", "layercam", "eigencam"):
        _add(store, f"resnet50/{m}", layerscope.explain(resnet, imgs, method=m))
    _add(store, "resnet50/ablationcam", layerscope.explain(resnet, imgs[:1], method="ablationcam", layers="layer4.2"))
    del resnet

    try:
        import transformers
    except ImportError:
        print("transformers not installed: no ViT maps", file=sys.stderr)
    else:
        cfg = transformers.ViTConfig(
            image_size=64,
            patch_size=8,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            num_labels=10,
        )
        torch.manual_seed(0)
        vit = transformers.ViTForImageClassification(cfg).eval()
        small = _images(2, 64, seed=2)
        from layerscope.inputs import Preprocess

        pre = Preprocess(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        for m in ("gradcam", "layercam", "eigencam"):
            _add(store, f"vit/{m}", layerscope.explain(vit, small, method=m, preprocess=pre))

    try:
        import keras
    except ImportError:
        print("keras not installed: no Keras maps", file=sys.stderr)
    else:
        keras.utils.set_random_seed(0)
        kmodel = load_model("vgg16-cifar10", framework="keras", weights="random", seed=0)
        _add(
            store,
            "keras-vgg16-cifar10/gradcam-guided",
            layerscope.explain(kmodel, imgs[:1], method="gradcam", guided_grads=True),
        )
        _add(store, "keras-vgg16-cifar10/gradcam++", layerscope.explain(kmodel, imgs[:1], method="gradcam++"))
    return store


def compare(a: str, b: str) -> int:
    x, y = np.load(a), np.load(b)
    ka, kb = set(x.files), set(y.files)
    bad = 0
    for k in sorted(ka ^ kb):
        print(f"only in {'the first' if k in ka else 'the second'}: {k}")
        bad += 1
    for k in sorted(ka & kb):
        if x[k].shape != y[k].shape or x[k].dtype != y[k].dtype or not np.array_equal(x[k], y[k]):
            diff = (
                np.abs(x[k].astype(np.float64) - y[k].astype(np.float64)).max() if x[k].shape == y[k].shape else "shape"
            )
            print(f"differs: {k} (max |diff| {diff})")
            bad += 1
    print(f"{len(ka & kb)} arrays compared, {bad} differ or are missing")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the maps to this .npz")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two .npz files bit for bit")
    a = p.parse_args()
    if a.compare:
        missing = [f for f in a.compare if not os.path.isfile(f)]
        if missing:
            p.error(f"no such file: {', '.join(missing)}")
        return compare(*a.compare)
    if not a.out:
        p.error("--out or --compare")
    store = run()
    np.savez(a.out, **store)
    print(f"{len(store)} arrays -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
