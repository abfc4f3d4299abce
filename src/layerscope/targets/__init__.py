"""Targets beyond a class index, for ``explain(target=...)`` (PyTorch, gradient methods).

* :func:`region`: for a segmentation model (``(N, K, H, W)`` per-pixel scores), class ``c``'s
  scores summed over a mask or the predicted region;
* :func:`text`: for a CLIP model, the image–text similarity of a prompt (the model's own
  ``logits_per_image``);
* :func:`similar_to`: the cosine similarity of an image's embedding to a reference image's;
* :func:`box`: for a detector, the class scores and box agreement of the detections that
  match a box; :func:`detections`: each of the top-``k`` detections in turn.

::

    import layerscope
    from layerscope.targets import box, detections, region, similar_to, text

    ex = layerscope.explain(seg_model, image, target=region(3))  # the predicted class-3 region
    ex = layerscope.explain(clip, image, target=text("a photo of a cat", model=clip))
    exps = layerscope.explain_many(clip, image, targets=text(["a cat", "a dog"], model=clip))
    ex = layerscope.explain(clip, image, target=similar_to("other.jpg", model=clip))
    ex = layerscope.explain(detector, image, target=box((40, 30, 200, 180), label=3))
    exps = layerscope.explain_many(detector, image, targets=detections(3))

A target is a callable ``(model_output) -> (N,)`` scores; :func:`text` and
:func:`similar_to` also say how to run the model (``run_model``, see
:mod:`layerscope.targets._embedding`). Torch is imported only when a target is made or called.
"""

from __future__ import annotations

from layerscope.targets._embedding import KINDS, EmbeddingTarget, described
from layerscope.targets.box import Box, Detections, box, detections
from layerscope.targets.region import SEGMENTATION_KEYS, Region, region
from layerscope.targets.similar import SimilarTo, similar_to
from layerscope.targets.text import Text, image_features, is_dual_encoder, text

__all__ = [
    "KINDS",
    "SEGMENTATION_KEYS",
    "Box",
    "Detections",
    "EmbeddingTarget",
    "Region",
    "SimilarTo",
    "Text",
    "box",
    "described",
    "detections",
    "image_features",
    "is_dual_encoder",
    "region",
    "similar_to",
    "text",
]
