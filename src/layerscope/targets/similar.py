"""The image–image target, :func:`similar_to`: the cosine similarity of an image's embedding
to a reference image's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layerscope.errors import UsageError
from layerscope.info import info_for
from layerscope.inputs import as_rgb_array, is_tensor
from layerscope.targets._embedding import EmbeddingTarget, embedding_of, inference, model_device, normalised, quoted
from layerscope.targets.text import image_features, is_dual_encoder


class SimilarTo(EmbeddingTarget):
    """The cosine similarity of each image's embedding to ``K`` reference embeddings (see
    :func:`similar_to`).

    Attributes:
        labels: each reference's name: its file name quoted, else ``reference image``.
        embeddings: ``(K, D)`` the references' unit-length embeddings, computed once.
    """

    kind = "image"
    name = "similar_to"

    def __init__(self, image: Any, model: Any, preprocess: Any = None) -> None:
        import torch

        if is_tensor(image) or not isinstance(image, (list, tuple)):
            image = [image] if not is_tensor(image) else image
        if not is_tensor(image) and not image:
            raise UsageError("similar_to(): no reference image given")
        x, labels = _reference_batch(image, model, preprocess)
        with inference(model):
            p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
            dtype = p.dtype if p is not None and p.is_floating_point() else None
            ref = _embed(model, x.to(device=model_device(model), dtype=dtype))
        self.embeddings = normalised(ref).detach()
        if not torch.isfinite(self.embeddings).all():
            raise UsageError("similar_to(): the reference image's embedding is zero or not finite")
        super().__init__(model, labels)

    def similarities(self, model: Any, x: Any) -> Any:
        """``(N, K)`` cosine similarities. The gradient is taken with the image embedding's
        length held fixed (``e · r̂ / |e|`` with ``|e|`` a constant): the exact gradient of
        the cosine is 0 where it is largest, so an image against itself would give flat maps."""
        e = _embed(model, x).float()
        unit = e / e.pow(2).sum(dim=-1, keepdim=True).pow(0.5).detach()
        return unit @ self.embeddings.to(e.device).T


def similar_to(image: Any, *, model: Any, preprocess: Any = None) -> SimilarTo:
    """An embedding target: how similar each image is to a reference image.

    The explained score of image ``n`` is the cosine similarity of its embedding ``e`` to the
    reference's ``r``, ``e · r / (|e| |r|)``. The embedding is CLIP's image features for a
    CLIP model (transformers' or OpenCLIP's), else the model's own ``(N, D)`` output. The
    reference's embedding is computed once, without gradients, when the target is made::

        from layerscope.targets import similar_to

        exp = layerscope.explain(clip, "cat.jpg", target=similar_to("other_cat.jpg", model=clip))

    The maps follow the gradient of ``e · r̂ / |e|`` with the length ``|e|`` held fixed
    (its value is the cosine): the exact gradient of the cosine vanishes where the cosine is
    largest, so an image explained against itself would give flat maps.

    Args:
        image: the reference: a path, PIL image or uint8 array, a list of them (one target
            per reference, as :func:`layerscope.targets.text`'s prompts), or a preprocessed
            ``(C, H, W)`` / ``(K, C, H, W)`` tensor.
        model: the model explained.
        preprocess: how to make the model input of a picture; default: the model info's.

    Returns:
        The target for ``explain(..., target=...)``: ``scores`` are the cosines,
        ``targets`` the reference's index.
    """
    return SimilarTo(image, model, preprocess)


def _reference_batch(images: Any, model: Any, preprocess: Any) -> tuple[Any, list[str]]:
    import numpy as np
    import torch

    if is_tensor(images):
        x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images).detach()
        x = x[None] if x.ndim == 3 else x
        if x.ndim != 4:
            raise UsageError(f"similar_to(): a tensor reference is (C, H, W) or (K, C, H, W), not {tuple(x.shape)}")
        return x.float(), [_label(None, i, len(x)) for i in range(len(x))]
    prep = preprocess if preprocess is not None else info_for(model).preprocessor()
    x = torch.as_tensor(np.asarray(prep([as_rgb_array(im) for im in images])))
    return x, [_label(im, i, len(images)) for i, im in enumerate(images)]


def _label(image: Any, i: int, n: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return quoted(Path(image).name)
    return "reference image" if n == 1 else f"reference {i}"


def _embed(model: Any, x: Any) -> Any:
    if hasattr(model, "get_image_features") or is_dual_encoder(model):
        return embedding_of(image_features(model, x), "similar_to()")
    return embedding_of(model(x), "similar_to()")
