"""The notebook recipe layerscope began as, as one set of named settings.

The recipe: VGG16 (ImageNet, no top) + GlobalAveragePooling + Dense(1024, relu) +
Dense(10, softmax); one CIFAR-10 image resized to 224×224 and VGG-preprocessed; Grad-CAM
with guided gradients at the 13 conv layers; JET over the image; the recipe's captions
``Layer: <name>, Output size: <shape>``; a 500 ms GIF looping forever, ``grad_cam.gif``.

From Python::

    from layerscope import recipe
    exp = recipe.explain_cifar10(0, framework="keras", weights="vgg16_notop.h5")
    exp.save("grad_cam.gif", options=recipe.RECIPE_RENDER)

On the command line: ``layerscope tour --framework keras --model vgg16-cifar10 --cifar10 0``.
"""

from __future__ import annotations

import os
from typing import Any

from layerscope.render.options import RenderOptions

#: The recipe's model.
RECIPE_MODEL = "vgg16-cifar10"
#: The recipe's method and its options.
RECIPE_METHOD = "gradcam"
RECIPE_METHOD_OPTIONS: dict[str, Any] = {"guided_grads": True}
#: How the recipe draws: JET, the recipe's one-line caption, 500 ms a frame.
RECIPE_RENDER = RenderOptions(colormap="jet", caption="recipe", duration=500)


def explain_cifar10(
    index: int = 0,
    framework: str = "keras",
    weights: str | os.PathLike[str] | None = None,
    split: str = "test",
    cifar10_path: str | os.PathLike[str] | None = None,
    model: Any = None,
    **options: Any,
) -> Any:
    """The recipe: explain CIFAR-10 image ``index`` with the recipe's model and settings.

    Args:
        index: the image's index in ``split``.
        framework: ``"keras"`` (the recipe's own) or ``"torch"``.
        weights: the model's weights (see :func:`layerscope.load_model`); ignored if ``model`` is given.
        split: ``"test"`` or ``"train"``.
        cifar10_path: a local CIFAR-10 tarball or folder (default: the caches, else a download).
        model: an already loaded recipe model.
        **options: override the recipe's method options.

    Returns:
        An :class:`~layerscope.Explanation`; save it with ``options=RECIPE_RENDER`` for the recipe's frames.
    """
    from layerscope.datasets.cifar10 import load_image
    from layerscope.explanation import explain
    from layerscope.models import load_model

    image, _, _ = load_image(index, split, cifar10_path)
    if model is None:
        model = load_model(RECIPE_MODEL, weights=None if weights is None else str(weights), framework=framework)
    return explain(model, image, method=RECIPE_METHOD, **{**RECIPE_METHOD_OPTIONS, **options})
