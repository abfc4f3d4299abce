"""Tensors of every dtype given to ``explain`` (issue 18 item 15) and flat maps whose
reason is known (item 12)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import layerscope
from layerscope.errors import UsageError
from layerscope.inputs import Preprocess


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


PP = Preprocess(size=(8, 8))


def test_a_uint8_image_tensor_is_preprocessed_like_the_image() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    want = layerscope.explain(Small().eval(), img, preprocess=PP, target=1)
    chw = torch.from_numpy(img).permute(2, 0, 1).contiguous()  # what torchvision's read_image gives
    for given in (chw, chw[None]):
        got = layerscope.explain(Small().eval(), given, preprocess=PP, target=1)
        np.testing.assert_array_equal(got.cams["conv"], want.cams["conv"])
        np.testing.assert_array_equal(got.images[0], img)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_other_integer_bool_and_complex_tensors_are_refused_naming_the_dtype(dtype: torch.dtype) -> None:
    x = torch.zeros(1, 3, 8, 8, dtype=dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(UsageError, match=f"explain got a {name} tensor; give a floating-point tensor"):
        layerscope.explain(Small().eval(), x, preprocess=PP)


class ClsViT(nn.Module):
    """Patch embedding, a class token, two attention blocks; the head reads the class token
    after the last block, so the last block's patch tokens do not reach the score."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True) for _ in range(2)
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
        for b in self.blocks:
            t = b(t)
        return self.head(t[:, 0])


def test_a_cls_vits_last_block_is_flat_and_says_why() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = layerscope.explain(ClsViT().eval(), torch.randn(1, 3, 16, 16))
    assert exp.layers == ["blocks.0", "blocks.1"]
    assert exp.blocked == {"blocks.1": "patch tokens"}
    assert exp.flat["blocks.1"][0] and not exp.flat["blocks.0"][0]
    why = [str(w.message) for w in caught if "flat" in str(w.message)]
    assert len(why) == 1 and "class token's score does not depend on that block's patch tokens" in why[0]
    assert "blocks.1" in why[0] and "blocks.0" not in why[0]
    assert exp.caption("blocks.1")[1].endswith("flat: score ignores its patch tokens")
    assert "flat" not in exp.caption("blocks.0")[1]
    assert "class token's score does not depend" in exp.flat_reason("blocks.1")
    assert exp.flat_reason("blocks.0") is None


def test_a_layer_the_score_does_not_reach_says_so() -> None:
    class Branch(Small):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.side(x)  # computed, never used
            return super().forward(x)

    with pytest.warns(UserWarning, match="does not depend on that layer's output"):
        exp = layerscope.explain(Branch().eval(), torch.rand(1, 3, 8, 8), layers=["conv", "side"])
    assert exp.blocked == {"side": "output"} and exp.caption("side")[1].endswith("flat: score ignores this layer")
