"""Training the notebook recipe's classification head, in torch and in Keras.

The recipe's model is VGG16's conv base (frozen) + global average pooling + Dense(1024, relu)
+ Dense(10, softmax). Both trainers take random batches of CIFAR-10 images, run the frozen
base without gradients to its pooled 512-d features, and take one Adam step on the head; the
base's weights never change. When done, the model's :class:`~layerscope.info.ModelInfo`
loses its untrained-head warning. Save with :func:`save_torch` (``.safetensors``) or
:func:`layerscope.models.keras_zoo.save_weights` (``.weights.h5``), both atomic.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import UsageError
from layerscope.info import model_info
from layerscope.inputs import CaffePreprocess, Preprocess

Log = Callable[[int, float, float], None]


def _preprocessor(model: Any, default: Any) -> Any:
    info = model_info(model)
    return info.preprocess if info is not None and info.preprocess is not None else default


def _head_trained(model: Any) -> None:
    """Drop the untrained-head warning and note from the model's recorded info."""
    from layerscope.info import attach_info
    from layerscope.models.classes import UNTRAINED_HEAD

    info = model_info(model)
    if info is not None and info.warning == UNTRAINED_HEAD:
        attach_info(model, info.replace(warning=None, note=None))


def train_head_torch(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log: Log | None = None,
) -> list[float]:
    """Adam on the head of layerscope's torch ``vgg16-cifar10`` (``model.head``), the conv
    base frozen (run without gradients, its weights untouched).

    Args:
        model: ``load_model("vgg16-cifar10")``.
        images: uint8 ``(N, H, W, 3)`` training images; labels: ``(N,)``.
        steps: optimisation steps; batch_size, learning_rate, seed: as named.
        log: called as ``log(step, loss, batch accuracy)`` after each step.

    Returns:
        The loss of each step.
    """
    import torch

    if steps <= 0:
        raise UsageError(f"the number of steps must be positive, not {steps}")
    if not hasattr(model, "head") or not hasattr(model, "features"):
        raise UsageError("train-head needs the recipe model (vgg16-cifar10)")
    prep = _preprocessor(model, Preprocess())
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.head.parameters(), lr=learning_rate)
    losses = []
    model.eval()
    for step in range(1, steps + 1):
        idx = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
        x = torch.from_numpy(prep(list(images[idx])))
        y = torch.from_numpy(np.asarray(labels[idx], dtype=np.int64))
        with torch.no_grad():
            feats = torch.flatten(model.pool(model.features(x)), 1)
        model.head.train()
        logits = model.head(feats)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.head.eval()
        losses.append(float(loss))
        if log is not None:
            log(step, float(loss), float((logits.argmax(1) == y).float().mean()))
    _head_trained(model)
    return losses


def save_torch(model: Any, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """The whole state dict as ``.safetensors``, atomically (loadable with ``--weights PATH``)."""
    from safetensors.torch import save

    from layerscope.atomic import write_bytes

    p = Path(path)
    if p.suffix != ".safetensors":
        raise UsageError(f"{p}: torch weights are saved as .safetensors")
    data = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    return write_bytes(p, data, overwrite)


def train_head_keras(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train the recipe's head (Dense 1024 → Dense 10) on CIFAR-10 with the VGG16 base frozen.

    Each step takes a random batch, runs the frozen base (inference only) to its pooled
    512-d features, and takes one Adam step on the head. The base's weights never change.

    Args:
        model: the recipe model, ``load_model("vgg16-cifar10", framework="keras")``.
        images: uint8 ``(N, 32, 32, 3)`` training images; labels: ``(N,)``.
        steps: optimisation steps; batch_size, learning_rate, seed: as named.
        log: called as ``log(step, loss, accuracy)`` after each step.

    Returns:
        The loss of each step.
    """
    from layerscope.models.keras_zoo import RECIPE_HEAD, keras_module

    keras = keras_module()
    if steps <= 0:
        raise UsageError(f"the number of steps must be positive, not {steps}")
    try:
        gap = model.get_layer(RECIPE_HEAD[0])
        head_layers = [model.get_layer(n) for n in RECIPE_HEAD[1:]]
    except ValueError:
        raise UsageError("train_head needs the recipe model (load_model('vgg16-cifar10', framework='keras'))") from None
    preprocess = _preprocessor(model, CaffePreprocess())
    features = keras.Model(model.inputs, gap.output)
    head = keras.Sequential([keras.Input((gap.output.shape[-1],)), *head_layers])
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(1, steps + 1):
        idx = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
        x = preprocess(list(images[idx]))
        f = np.asarray(keras.ops.convert_to_numpy(features(x, training=False)))
        y = np.asarray(labels[idx], dtype=np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = float(np.asarray(head.train_on_batch(f, y)).reshape(-1)[0])
        acc = float((np.asarray(keras.ops.convert_to_numpy(head(f, training=False))).argmax(1) == y).mean())
        losses.append(loss)
        if log is not None:
            log(step, loss, acc)
    _head_trained(model)
    return losses
