"""Token and channels-last layer outputs laid out as ``(N, C, h, w)`` feature maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from layerscope.capture._layers import token_grid, token_grids
from layerscope.errors import UsageError

_RESHAPE_HINT = "pass reshape=fn to explain, a callable from the layer's output to an (N, C, h, w) tensor"


class Layout:
    """How one layer's output becomes an ``(N, C, h, w)`` feature map (applied alike to the
    activation and its gradient, so the map is of the layer's own tensor).

    Attributes:
        kind: ``"nchw"`` (as it is), ``"tokens"`` (``(N, T, C)``: ``extra`` leading tokens
            dropped, the rest a ``grid``), ``"nhwc"`` (channels last, permuted) or ``"custom"``.
        note: the caption's description, e.g. ``"tokens 197 → 14×14"``.
    """

    def __init__(
        self, kind: str, grid: tuple[int, int] | None = None, extra: int = 0, fn: Callable[..., Any] | None = None
    ) -> None:
        self.kind, self.grid, self.extra, self.fn = kind, grid, extra, fn
        self.note = ""

    @property
    def identity(self) -> bool:
        """Whether the output is laid out as it is (``"nchw"``)."""
        return self.kind == "nchw"

    def cut_off(self, grad: torch.Tensor) -> torch.Tensor | None:
        """For tokens with leading extra tokens: a 0-d flag on the device, 1 when the
        gradient reaches the extra (class) tokens but not one grid token — the score does
        not depend on this layer's patch tokens (a CLS-token ViT's last block); else ``None``."""
        if self.kind != "tokens" or not self.extra:
            return None
        g = grad.detach()
        return ((g[:, self.extra :].abs().amax() == 0) & (g[:, : self.extra].abs().amax() > 0)).float()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            n, _, c = t.shape
            h, w = self.grid  # type: ignore[misc]
            return t[:, self.extra :, :].reshape(n, h, w, c).permute(0, 3, 1, 2)
        out = self.fn(t)  # type: ignore[misc]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"reshape= returned {got}; it must return an (N, C, h, w) tensor")
        return out


def patch_size(model: nn.Module) -> int | None:
    """The patch size of a transformer: the first ``Conv2d`` whose stride equals its kernel
    (> 1), as a patch embedding is; ``None`` if there is none."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and m.stride[0] > 1 and m.stride[0] == m.stride[1]:
            return int(m.stride[0])
    return None


def prefix_tokens(model: nn.Module) -> int | None:
    """How many tokens come before the patch tokens, when the model says so (timm's
    ``num_prefix_tokens``: its class, distillation and register tokens); else ``None``."""
    n = getattr(model, "num_prefix_tokens", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def _is_grid(hw: tuple[int, int], dims: tuple[int, int], patch: int | None) -> bool:
    return any(e == 0 and g == dims for e, g in token_grids(hw, dims[0] * dims[1], patch))


def infer_layout(
    name: str,
    shape: tuple[int, ...],
    hw: tuple[int, int] | None,
    patch: int | None,
    reshape: Any = None,
    prefix: int | None = None,
) -> Layout:
    """The :class:`Layout` of a layer output of ``shape`` (batch first) for an ``hw`` input.

    ``(N, C, h, w)`` stays; ``(N, h, w, C)`` (Swin) is permuted when ``(h, w)`` is a grid of the
    input and ``(w, C)`` is not; ``(N, T, C)`` tokens become a grid: the leading CLS /
    distillation / register tokens are the model's declared ``prefix`` tokens
    (:func:`prefix_tokens`) when ``T - prefix`` tokens form a grid of the input, else the ones
    left over when ``T`` is matched against the input's ``H×W`` down-sampled by the patch size
    (or any stride), fewest extra tokens first.

    Raises:
        UsageError: a layout it cannot tell, naming ``reshape=``.
    """
    if reshape is not None:
        lay = Layout("custom", fn=reshape)
        lay.note = "reshape="
        return lay
    if len(shape) == 4:
        if (
            hw is not None
            and not _is_grid(hw, (shape[2], shape[3]), patch)
            and _is_grid(hw, (shape[1], shape[2]), patch)
        ):
            lay = Layout("nhwc", grid=(shape[1], shape[2]))
            lay.note = f"channels-last {shape[1]}×{shape[2]}×{shape[3]}"
            return lay
        return Layout("nchw")
    if len(shape) == 3 and hw is not None:
        tokens, channels = shape[1], shape[2]
        found = token_grid(tokens, hw, patch, prefix)
        if found is not None:
            extra, grid = found
            lay = Layout("tokens", grid=grid, extra=extra)
            lay.note = f"tokens {tokens} → {grid[0]}×{grid[1]}"
            return lay
        if token_grids(hw, channels, patch):
            raise UsageError(
                f"layer {name!r} outputs {tuple(shape)}, tokens on the last axis (N, C, T); {_RESHAPE_HINT}"
            )
        raise UsageError(
            f"layer {name!r} outputs {tuple(shape)}: its {tokens} tokens form no grid of the "
            f"{hw[0]}×{hw[1]} input; {_RESHAPE_HINT}"
        )
    raise UsageError(f"layer {name!r} outputs {tuple(shape)}, not a (N, C, h, w) feature map; {_RESHAPE_HINT}")
