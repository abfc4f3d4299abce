"""The segmentation target, :func:`region`: a class's per-pixel scores summed over a mask
(the Grad-CAM recipe for segmentation). Torch is imported only when the target is called."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerscope.errors import UsageError

#: Where a segmentation model keeps its ``(N, K, H, W)`` scores in a dict output
#: (torchvision's segmentation models: ``"out"``; Hugging Face: ``"logits"``).
SEGMENTATION_KEYS = ("out", "logits")


class Region:
    """The summed class-``class_index`` scores over a mask (see :func:`region`).

    Attributes:
        class_index: the class explained; ``Explanation.targets`` holds it.
        mask: the mask as given (``None``: the predicted region).
    """

    def __init__(self, class_index: int, mask: Any = None) -> None:
        if isinstance(class_index, (bool, np.bool_)) or not isinstance(class_index, (int, np.integer)):
            raise UsageError(f"region(class_index={class_index!r}): give the class as a whole number")
        if class_index < 0:
            raise UsageError(f"region(class_index={class_index}): a class index cannot be negative")
        self.class_index = int(class_index)
        self.mask = mask
        if mask is not None:
            m = _as_numpy(mask)
            if m.ndim not in (2, 3):
                raise UsageError(f"region mask has shape {m.shape}; give a (H, W) or (N, H, W) array")
            if m.dtype != np.bool_ and not np.isin(m, (0, 1)).all():
                raise UsageError("region mask must be boolean or 0/1 (a pixel is in the region or not)")

    def __repr__(self) -> str:
        return f"region({self.class_index}{'' if self.mask is None else ', mask=...'})"

    def scores_of(self, output: Any) -> Any:
        """The ``(N, K, H, W)`` tensor of a model's output (a tensor, a dict / ``ModelOutput``
        with ``out`` or ``logits``, or a tuple whose first item is it)."""
        import torch

        if isinstance(output, torch.Tensor):
            return output
        if hasattr(output, "keys"):
            for key in SEGMENTATION_KEYS:
                if key in output.keys() and isinstance(output[key], torch.Tensor):
                    return output[key]
            raise UsageError(
                f"region(): the model returns a {type(output).__name__} with keys {', '.join(map(str, output.keys()))} "
                f"and none of {', '.join(SEGMENTATION_KEYS)}; give output=KEY to explain"
            )
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            return output[0]
        raise UsageError(f"region(): the model returned {type(output).__name__}; expected a (N, K, H, W) tensor")

    def __call__(self, output: Any) -> Any:
        """``(N,)`` scores: ``Σ_{h,w} out[n, c, h, w] · mask[n, h, w]`` (``mask``: the predicted
        class-``c`` pixels, ``argmax_k out[n, k] == c``, found without gradient)."""
        import torch

        out = self.scores_of(output)
        if out.ndim != 4:
            raise UsageError(
                f"region() is for segmentation models with (N, K, H, W) outputs; this model's output has shape "
                f"{tuple(out.shape)}: explain a class with target=INDEX instead"
            )
        n, k, h, w = (int(s) for s in out.shape)
        c = self.class_index
        if c >= k:
            raise UsageError(
                f"region({c}): class index {c} is out of range for a model with {k} classes (0 to {k - 1})"
            )
        if self.mask is None:
            with torch.no_grad():
                mask = out.detach().argmax(dim=1) == c
        else:
            mask = self.mask
            if not isinstance(mask, torch.Tensor):
                mask = torch.from_numpy(np.ascontiguousarray(_as_numpy(mask)))
            if tuple(mask.shape[-2:]) != (h, w):
                raise UsageError(
                    f"region mask is {mask.shape[-2]}×{mask.shape[-1]} but the model's output is {h}×{w}: "
                    "give a mask of the output's size"
                )
            if mask.ndim == 3 and int(mask.shape[0]) not in (1, n):
                raise UsageError(
                    f"region mask holds {int(mask.shape[0])} masks for {n} images; give one or one per image"
                )
            mask = mask.to(out.device)
        if mask.ndim == 2:
            mask = mask[None]
        return (out[:, c].float() * mask.to(torch.float32)).sum(dim=(1, 2))


def region(class_index: int, mask: Any = None) -> Region:
    """A segmentation target: class ``class_index``'s scores summed over a region.

    For a model whose output is ``(N, K, H, W)`` per-pixel class scores (the score tensor of a
    dict output is found under ``out`` or ``logits``), the explained score of image ``n`` is
    ``Σ_{h,w} out[n, c, h, w] · mask[n, h, w]``, as in the Grad-CAM recipe for segmentation.

    Args:
        class_index: the class ``c``.
        mask: a ``(H, W)`` mask for every image or ``(N, H, W)`` one per image, boolean or
            0/1 (numpy or torch), of the output's size (no resizing: a different size is an
            error). ``None``: the pixels the model predicts as ``c`` (``argmax`` over the ``K``
            classes, computed without gradient); an image with no such pixel gets a zero score
            and flat maps.

    Returns:
        A callable for ``explain(model, x, target=region(c))`` (PyTorch, gradient methods).
        ``Explanation.targets`` is ``c``; ``Explanation.scores`` the summed scores;
        ``Explanation.outputs`` each class's score averaged over the pixels.
    """
    return Region(class_index, mask)


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)
