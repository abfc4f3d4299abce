"""Pixel-resolution methods built on guided backpropagation.

The capture computes the guided-backpropagation saliency once per batch (one extra forward
and backward, whatever the number of layers) and hands it to each layer's call as
``saliency``, ``(N, C_in, H, W)``, the gradient of the target with respect to the input
when every ReLU passes back only positive gradients where its input was positive.
Maps are ``(N, H, W)``, at the input's resolution.
"""

from __future__ import annotations

from typing import Any

from layerscope.methods._ops import amax, upsample
from layerscope.methods._registry import Method, register
from layerscope.methods.gradient import gradcam


def saliency_map(saliency: Any) -> Any:
    """``(N, C_in, H, W)`` input gradients → ``(N, H, W)``: the largest magnitude over the
    input channels (Simonyan et al. 2014's convention for an image saliency map)."""
    return amax(abs(saliency), 1)


def guided_backprop(activations: Any, gradients: Any = None, *, saliency: Any) -> Any:
    """Guided backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller, ICLR Workshops
    2015, "Striving for Simplicity: The All Convolutional Net").

    The gradient of the target with respect to the input, where every ReLU's backward pass is
    ``R_in = R_out · [R_out > 0] · [x > 0]`` (only positive gradients, only where the ReLU's
    input was positive). The map is ``max_c |∂y/∂x_c|`` over input channels. It does not
    depend on the layer: every layer shows the same map.

    Args:
        activations: ignored (the layer's output; only its shape matters to the caption).
        gradients: ignored.
        saliency: the guided input gradient ``(N, C_in, H, W)``.
    """
    return saliency_map(saliency)


def guided_gradcam(activations: Any, gradients: Any, *, saliency: Any) -> Any:
    """Guided Grad-CAM (Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, ICCV 2017,
    "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization").

    The guided-backpropagation saliency times the layer's Grad-CAM map (ordinary gradients),
    upsampled bilinearly to the input size: ``S_c = GB_c ⊙ U(CAM)``; the map is
    ``max_c |S_c| = U(CAM) · max_c |GB_c|`` (``U(CAM) ≥ 0``).

    Args:
        activations: ``A``, ``(N, C, h, w)``.
        gradients: ``∂y/∂A``, same shape (ordinary, not guided).
        saliency: the guided input gradient ``(N, C_in, H, W)``.
    """
    cam = upsample(gradcam(activations, gradients), tuple(saliency.shape[-2:]))
    return saliency_map(saliency) * cam


register(
    Method(
        name="guided-backprop",
        title="Guided Backprop",
        fn=guided_backprop,
        summary="guided backpropagation: input gradient through ReLUs that pass only positive gradients "
        "(Springenberg et al. 2015); the same map at every layer",
        needs=frozenset({"saliency"}),
        cost="2 forward + 1 backward (guided), all layers together",
    )
)
register(
    Method(
        name="guided-gradcam",
        title="Guided Grad-CAM",
        fn=guided_gradcam,
        summary="Guided Grad-CAM: guided backpropagation × upsampled Grad-CAM (Selvaraju et al. 2017)",
        needs=frozenset({"activations", "gradients", "saliency"}),
        cost="2 forward + 2 backward (1 guided), all layers together",
    )
)
