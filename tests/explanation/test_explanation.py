"""Explanations of real (tiny or random) models through the renderer and the writers: the
layer GIF over the original photo, flat maps, a confident softmax model's tiny maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import layerscope
from layerscope import render
from layerscope.info import ModelInfo


def test_explanation_gif_has_one_frame_per_layer(vgg16: nn.Module, photo: np.ndarray, tmp_path: Path) -> None:
    exp = layerscope.explain(vgg16, photo)
    out = exp.save(tmp_path / "tour.gif")
    with Image.open(out) as im:
        n, size, loop = im.n_frames, im.size, im.info["loop"]
        durations = []
        for i in range(n):
            im.seek(i)
            durations.append(im.info["duration"])
    h, w = render.display_size(photo.shape[:2])
    assert n == 13 and durations == [500] * 13 and loop == 0
    assert size[0] > w + 2 * render.MARGIN and size[1] >= h + 100  # with the colour bar
    assert len(exp.images) == 1 and exp.images[0].shape == photo.shape
    # The top-left of the overlay (inside the margin) is a blend of the ORIGINAL photo.
    frames = exp.frames(alpha=0.0)
    first = np.asarray(frames[0])
    m = render.MARGIN
    base = np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(first[m : m + h, m : m + w], base)
    assert repr(exp).startswith("Explanation(13 layers, gradcam, 1 image, class ")


class Confident(nn.Module):
    """conv → ReLU → global mean → linear → softmax(60 · logits): a saturated probability
    output, whose gradients (and so Grad-CAM maps) are ~1e-18 yet have structure."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.2, 0.1, 0.2, 0.1], [-0.1, 0.1, 0.0, 0.1], [0.0, -0.1, 0.1, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return torch.softmax(60.0 * z, dim=1)


def test_a_confident_softmax_models_tiny_maps_are_not_flat() -> None:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 4
    model = Confident().eval()
    exp = layerscope.explain(model, x, layers="conv", info=ModelInfo(output="probabilities"))
    cam = exp.cams["conv"][0]
    assert float(exp.probabilities[0]) > 0.999999
    assert 1e-20 < cam.max() < 1e-15 and np.ptp(cam) > 0.1 * cam.max()  # tiny, but with structure
    assert not exp.flat["conv"][0]
    (fr,) = exp.frames(alpha=1.0, colorbar=False)
    h, w = render.display_size((16, 16))
    m = render.MARGIN
    drawn = np.asarray(fr)[m : m + h, m : m + w].reshape(-1, 3)
    assert len(np.unique(drawn, axis=0)) > 20  # drawn in colour, not blank
