"""PyTorch capture: :class:`TorchAdapter`, the :class:`~layerscope.capture.Adapter` for
``torch.nn.Module`` models.

Three strategies, chosen by ``CaptureRequest.needs``, over one forward-hook helper
(:class:`_Hooks`), one target resolution (:func:`resolve_targets`) and one finite-map
check with one transfer to the host (:func:`layerscope.capture._autograd.maps_to_host`):

* **one pass** (``"gradients"``, ``"activations"``): one forward pass and, for gradient
  methods, one backward pass for every chosen layer;
* **perturbation**: one forward pass captures every layer; each layer's method then re-runs
  the model through a :class:`Probe` (masked inputs, or the layer's output replaced);
* **saliency**: one guided-backpropagation pass gives the input gradient
  (:func:`guided_relu`), then the one-pass capture hands it to every layer's map.

How the one pass is kept correct and cheap:

* A forward hook on each chosen module keeps the module's output ``A``. ``A`` and its
  gradient must belong to one and the same tensor, so nothing may change ``A`` in place
  later: for the pass, torch's modules with an ``inplace`` flag (``ReLU(inplace=True)``, …)
  run out of place (flags restored afterwards). If an in-place *function* still changes a
  captured output (its version counter moves), the forward pass is run again with a clone
  of each captured output handed on to the rest of the network.
* A tensor hook on each ``A`` turns ``(A, ∂y/∂A)`` into the layer's map the moment the
  gradient is known; the gradient and ``A`` are dropped right after. The map stays on the
  model's device: no host synchronisation inside the pass, one transfer at the end.
* ``torch.autograd.grad`` is asked only for the deepest captured activations, so the
  backward pass stops at the earliest chosen layer, writes no ``.grad`` and computes no
  parameter gradient.
* The input is a private copy that requires grad, so frozen parameters and an outer
  ``torch.no_grad()`` still give a graph; train/eval mode, hooks, ``inplace`` flags and the
  TF32 flags are restored afterwards, also after an error.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from layerscope.capture import CaptureRequest, CaptureResult, LayerShape, given_targets, match_layers
from layerscope.capture._autograd import backward_to_maps, fp32, maps_to_host, precision_mode, target_scores
from layerscope.errors import ModelError, UsageError
from layerscope.info import ModelInfo

logger = logging.getLogger("layerscope")

# --- devices and precision ------------------------------------------------------------------


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``spec``: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        UsageError: an unknown spelling, or a device this machine or this torch build lacks.
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {spec!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"device {spec!r} is not available: {why}; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"device {spec!r} is not available: this machine has {count} CUDA device(s)")
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"device {spec!r} is not available on this machine; use --device cpu (or auto)")
        return dev
    raise UsageError(f"unsupported device {spec!r}; expected auto, cpu, cuda, cuda:N or mps")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 for none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


@contextlib.contextmanager
def placed(model: nn.Module, device: torch.device | None) -> Iterator[torch.device]:
    """The model on ``device`` for the block (moved back afterwards); yields its device."""
    here = model_device(model)
    if here.type == "meta":
        raise ModelError(
            "the model's weights are on the 'meta' device (shapes only, no values): load its weights "
            "(model.to_empty(device='cpu') then load_state_dict) before explaining it"
        )
    if device is None or _same_device(here, device):
        yield here
        return
    try:
        model.to(device)
        yield device
    finally:
        model.to(here)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.index is None or b.index is None


# --- the model's state ------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode; afterwards every module's own train/eval flag is as it was."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextlib.contextmanager
def out_of_place(model: nn.Module) -> Iterator[None]:
    """Run torch's own modules that have a true ``inplace`` flag (``nn.ReLU``, ``nn.Dropout``,
    …) out of place; restore the flags. A user module's attribute of that name is left alone."""
    changed = [
        m
        for m in model.modules()
        if getattr(m, "inplace", None) is True and type(m).__module__.startswith("torch.nn.modules")
    ]
    try:
        for m in changed:
            m.inplace = False
        yield
    finally:
        for m in changed:
            m.inplace = True


# --- layer names ----------------------------------------------------------------------------


def layer_names(model: nn.Module, info: ModelInfo | None = None) -> dict[str, str]:
    """Every addressable layer, name → module path: the info's friendly names first, then
    every module's own path."""
    names: dict[str, str] = dict(info.layers) if info is not None else {}
    for path, _ in model.named_modules():
        if path:
            names.setdefault(path, path)
    return names


def default_layers(model: nn.Module, info: ModelInfo | None = None) -> list[str]:
    """The default layers: the info's friendly names; else, for a vision transformer (its
    only convolutions are patch embeddings), each transformer block; else every ``Conv2d``,
    in module order."""
    if info is not None and info.layers:
        return list(info.layers)
    convs = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if all(m.kernel_size == m.stride and m.stride[0] > 1 for _, m in convs):
        blocks = transformer_blocks(model)
        if blocks:
            return blocks
    return [p for p, _ in convs]


def _has_attention(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in module.modules())


def transformer_blocks(model: nn.Module) -> list[str]:
    """The transformer blocks: items of a ``ModuleList``/``Sequential`` that hold an attention
    module, innermost first (Swin's blocks, not its stages), in module order."""
    found: list[str] = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)):
            for i, item in enumerate(m):
                if _has_attention(item):
                    found.append(f"{path}.{i}" if path else str(i))
    return [p for p in found if not any(q.startswith(p + ".") for q in found)]


def resolve_layers(model: nn.Module, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
    """``(display name, module path)`` pairs; see :func:`layerscope.capture.match_layers`."""
    default = default_layers(model, info)
    if spec is None and not default:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer or transformer block; name the layers to explain")
    names = layer_names(model, info)
    modules = dict(model.named_modules())
    missing = [p for p in names.values() if p not in modules]
    if missing:
        raise ModelError(f"the model info names module {missing[0]!r}, which {type(model).__name__} does not have")
    return match_layers(spec, names, default)


# --- the forward pass -----------------------------------------------------------------------

_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels")
_TOO_SMALL = (
    "Output size is too small",
    "Kernel size can't be greater than actual input size",
    "non-zero size for non-batch dimensions",
    "smaller than kernel size",
    "pad should be at most half",
    "Padding size should be less than",
)
_WRONG_SIZE = ("mat1 and mat2 shapes cannot be multiplied", "shapes cannot be multiplied", "size mismatch")
_SIZE_HINT = "`--size N` on the command line, `Preprocess(size=(N, N))` or `ModelInfo(preprocess=...)` in Python"


class ModelInputs:
    """Several model inputs, called as ``model(*args, **kwargs)``: a tuple batch gives
    ``args``, a dict batch ``kwargs``. ``image`` is the first 4-D floating tensor (its size and
    batch count stand for the batch's)."""

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.image = next((t for t in self.tensors() if t.ndim == 4 and t.is_floating_point()), None)
        if self.image is None:
            raise UsageError(
                "several model inputs need a 4-D floating tensor (N, C, H, W) among them: the picture the maps "
                "are drawn over"
            )

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelInputs:
        """The inputs with ``fn`` applied to every tensor (anything else as it is)."""

        def f(v: Any) -> Any:
            return fn(v) if isinstance(v, torch.Tensor) else v

        return ModelInputs(tuple(f(v) for v in self.args), {k: f(v) for k, v in self.kwargs.items()})

    def requires_grad_(self, flag: bool = True) -> ModelInputs:
        for t in self.tensors():
            if t.is_floating_point():
                t.requires_grad_(flag)
        return self

    @property
    def device(self) -> torch.device:
        return self.image.device  # type: ignore[union-attr]

    @property
    def ndim(self) -> int:
        return self.image.ndim  # type: ignore[union-attr]

    @property
    def shape(self) -> torch.Size:
        return self.image.shape  # type: ignore[union-attr]

    def __len__(self) -> int:
        return int(self.image.shape[0])  # type: ignore[union-attr]

    def __call__(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


def forward(model: nn.Module, x: torch.Tensor | ModelInputs) -> Any:
    """``model(x)`` (``model(*args, **kwargs)`` for :class:`ModelInputs`), with the usual
    shape errors turned into one clear line.

    Raises:
        UsageError: an input of the wrong size (a fixed-input-size model), smaller than the
            network's down-sampling allows, or with the wrong number of channels.
    """
    try:
        return x(model) if isinstance(x, ModelInputs) else model(x)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hw = "×".join(str(int(s)) for s in x.shape[2:]) if x.ndim >= 3 else str(tuple(x.shape))
        ch = _CHANNELS.search(msg)
        if ch:
            want, got = ch.groups()
            raise UsageError(
                f"the model takes {want}-channel images but was given {got} channels: pass a "
                f"{want}-channel tensor (N, {want}, H, W), or a preprocess that makes one"
            ) from None
        if any(s in msg for s in _TOO_SMALL):
            raise UsageError(
                f"the {hw} input is smaller than the network's down-sampling allows ({msg}); "
                f"give a larger input size ({_SIZE_HINT})"
            ) from None
        if any(s in msg for s in _WRONG_SIZE):
            raise UsageError(
                f"the model does not take {hw} inputs ({msg}): it was built for a fixed input size; "
                f"give that size ({_SIZE_HINT})"
            ) from None
        raise


def select_output(out: Any, key: str | int | None = None) -> torch.Tensor:
    """The ``(N, classes)`` tensor of a model's output.

    Args:
        out: a tensor, a dict / ``ModelOutput`` (``logits`` by default) or a tuple/list
            (its first tensor by default).
        key: the dict key or the tuple index to use instead.
    """
    if key is not None:
        try:
            chosen = out[key] if not isinstance(key, str) or not hasattr(out, key) else getattr(out, key)
        except (KeyError, IndexError, TypeError):
            keys = list(out.keys()) if hasattr(out, "keys") else f"indices 0..{len(out) - 1}"
            raise UsageError(f"the model's output has no {key!r}; it has: {keys}") from None
        if not isinstance(chosen, torch.Tensor):
            raise ModelError(f"the model's output {key!r} is a {type(chosen).__name__}, not a tensor")
        return chosen
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "keys"):
        if "logits" in out.keys():
            return out["logits"]
        tensors = [k for k in out.keys() if isinstance(out[k], torch.Tensor)]
        tensors.sort(key=lambda k: out[k].ndim != 2)  # an (N, classes) candidate first
        raise ModelError(
            f"the model returns a {type(out).__name__} without 'logits' (keys: {', '.join(map(str, out.keys()))}); "
            f"choose one with output=KEY (e.g. output={tensors[0]!r})"
            if tensors
            else f"the model returns a {type(out).__name__} without tensors"
        )
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(f"the model returned {type(out).__name__}; expected a (N, classes) tensor")


def check_output(out: torch.Tensor) -> None:
    """The model gave ``(N, classes)`` scores with at least one class (no host sync)."""
    if out.ndim != 2:
        raise ModelError(f"the model's output has shape {tuple(out.shape)}; expected (N, classes)")
    if out.shape[1] == 0:
        raise ModelError("the model's output has 0 classes (shape (N, 0)); there is no class to explain")


def resolve_targets(out: torch.Tensor, target: Any) -> torch.Tensor:
    """The one target resolution: ``(N,)`` class indices as a tensor on the output's device.

    ``target`` is ``None`` (top-1 of each image, found on the device), one class index, one
    per image, or an already resolved index tensor. Checked on the host against the output's
    shape, which needs no synchronisation.
    """
    n, k = int(out.shape[0]), int(out.shape[1])
    if isinstance(target, torch.Tensor) and not target.is_floating_point() and target.dtype != torch.bool:
        if target.numel() == n and target.device == out.device:
            return target.reshape(n).long()
        target = target.detach().cpu().numpy()  # a caller's own tensor, given once
    t = given_targets(target, n, k)
    if t is None:
        return out.detach().argmax(dim=1)
    return torch.as_tensor(t, dtype=torch.long, device=out.device)


# --- layouts: token and channels-last outputs as (N, C, h, w) ------------------------------

#: The most extra tokens (CLS, distillation, registers) in front of a grid of patch tokens
#: when the model's patch size is known (a patch-embedding convolution), and when it is not.
MAX_EXTRA_TOKENS = 8
MAX_EXTRA_TOKENS_UNKNOWN_PATCH = 2
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


def _grids(hw: tuple[int, int], tokens: int, patch: int | None) -> list[tuple[int, tuple[int, int]]]:
    """``(extra tokens, (h, w))`` for every down-sampling ``s`` of an ``H×W`` input that leaves
    ``ceil(H/s)·ceil(W/s) ≤ tokens ≤ that + MAX_EXTRA_TOKENS``; with a known patch size only
    ``s = patch·2^k`` (ViT, Swin stages); without one at most 2 extra tokens."""
    h_in, w_in = hw
    strides = range(1, max(h_in, w_in) + 1)
    most = MAX_EXTRA_TOKENS if patch is not None else MAX_EXTRA_TOKENS_UNKNOWN_PATCH
    if patch is not None:
        strides = [patch * 2**k for k in range(12) if patch * 2**k <= max(h_in, w_in)]  # type: ignore[assignment]
    found: dict[tuple[int, int], int] = {}
    for s in strides:
        h, w = -(-h_in // s), -(-w_in // s)
        extra = tokens - h * w
        if 0 <= extra <= most:
            found.setdefault((h, w), extra)
    return sorted(((e, g) for g, e in found.items()), key=lambda eg: (eg[0], -eg[1][0]))


def _is_grid(hw: tuple[int, int], dims: tuple[int, int], patch: int | None) -> bool:
    return any(e == 0 and g == dims for e, g in _grids(hw, dims[0] * dims[1], patch))


def infer_layout(
    name: str, shape: tuple[int, ...], hw: tuple[int, int] | None, patch: int | None, reshape: Any = None
) -> Layout:
    """The :class:`Layout` of a layer output of ``shape`` (batch first) for an ``hw`` input.

    ``(N, C, h, w)`` stays; ``(N, h, w, C)`` (Swin) is permuted when ``(h, w)`` is a grid of the
    input and ``(w, C)`` is not; ``(N, T, C)`` tokens become a grid: the leading CLS /
    distillation / register tokens are the ones left over when ``T`` is matched against the
    input's ``H×W`` down-sampled by the patch size (or any stride), fewest extra tokens first.

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
        grids = _grids(hw, tokens, patch) or (_grids(hw, tokens, None) if patch is not None else [])
        if grids:
            extra, grid = grids[0]
            lay = Layout("tokens", grid=grid, extra=extra)
            lay.note = f"tokens {tokens} → {grid[0]}×{grid[1]}"
            return lay
        if _grids(hw, channels, patch):
            raise UsageError(
                f"layer {name!r} outputs {tuple(shape)}, tokens on the last axis (N, C, T); {_RESHAPE_HINT}"
            )
        raise UsageError(
            f"layer {name!r} outputs {tuple(shape)}: its {tokens} tokens form no grid of the "
            f"{hw[0]}×{hw[1]} input; {_RESHAPE_HINT}"
        )
    raise UsageError(f"layer {name!r} outputs {tuple(shape)}, not a (N, C, h, w) feature map; {_RESHAPE_HINT}")


class _Hooks:
    """The one forward-hook helper: keeps each chosen module's first output of a pass.

    ``strict``: an output that is not an ``(N, C, h, w)`` tensor is an error (for maps);
    otherwise any tensor's shape is recorded (for listings). ``clone``: hand a clone of each
    captured output on to the rest of the network (when an in-place function changed one).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[tuple[str, str]],
        strict: bool = True,
        hw: tuple[int, int] | None = None,
        reshape: Any = None,
    ) -> None:
        self.modules = dict(model.named_modules())
        self.hw = hw
        self.reshape = reshape
        self.patch = patch_size(model) if strict else None
        self.layouts: dict[str, Layout] = {}
        self.layers = list(layers)
        self.strict = strict
        self.clone = False
        self.acts: dict[str, torch.Tensor] = {}
        self.versions: dict[str, int] = {}
        self.order: list[str] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._handles: list[Any] = []

    def reset(self, clone: bool = False) -> None:
        self.clone = clone
        self.acts.clear()
        self.versions.clear()
        self.order.clear()

    def _hook(self, name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if name in self.acts:
                if self.strict:
                    warnings.warn(
                        f"layer {name!r} runs more than once per forward pass; its first call is used", stacklevel=2
                    )
                return None
            rest: tuple[Any, ...] | None = None
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output, rest = output[0], tuple(output[1:])  # (hidden states, attentions …) blocks
            if not isinstance(output, torch.Tensor):
                if self.strict:
                    kind = type(output).__name__
                    raise UsageError(f"layer {name!r} outputs a {kind}, not a (N, C, h, w) feature map")
                return None
            if self.strict:
                shape = tuple(int(s) for s in output.shape)
                self.layouts[name] = infer_layout(name, shape, self.hw, self.patch, self.reshape)
            self.acts[name] = output
            self.versions[name] = output._version
            self.order.append(name)
            self.shapes[name] = tuple(int(s) for s in output.shape[1:])
            if not self.clone:
                return None
            return output.clone() if rest is None else (output.clone(), *rest)

        return hook

    def __enter__(self) -> _Hooks:
        try:
            for name, path in self.layers:
                self._handles.append(self.modules[path].register_forward_hook(self._hook(name)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def changed_in_place(self) -> bool:
        """Whether a function changed a captured output in place (its version moved)."""
        return any(self.acts[n]._version != self.versions[n] for n in self.order)

    def check_ran(self) -> None:
        missing = [n for n, _ in self.layers if n not in self.acts]
        if missing:
            raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass")


def _model_input(model: nn.Module, x: Any, device: torch.device, channels_last: bool) -> Any:
    """A private copy of the batch on the model's device in the model's dtype: a tensor, or
    for a tuple / dict batch (several inputs) a :class:`ModelInputs` of copies of its tensors
    (floating ones in the model's dtype; other values as they are)."""
    if isinstance(x, (tuple, dict)):
        dtype = model_dtype(model)

        def copy(t: torch.Tensor) -> torch.Tensor:
            c = t.detach().to(device=device, dtype=dtype if t.is_floating_point() else None, copy=True)
            return c.contiguous(memory_format=torch.channels_last) if channels_last and c.ndim == 4 else c

        given = ModelInputs(x, None) if isinstance(x, tuple) else ModelInputs((), x)
        return given.map(copy)
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.ndim == 3:
        x = x[None]
    dtype = model_dtype(model)
    xin = x.detach().to(device=device, dtype=dtype if x.is_floating_point() else None, copy=True)
    if channels_last and xin.ndim == 4:
        xin = xin.contiguous(memory_format=torch.channels_last)
    return xin


def _capture_forward(
    model: nn.Module,
    xin: torch.Tensor,
    hooks: _Hooks,
    need_grad: bool,
    autocast: torch.dtype | None,
    key: Any,
    target: Any = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass with ``hooks`` (run again with clones if an in-place function changed
    a captured output); returns the ``(N, classes)`` output, checked, and for a callable
    ``target`` its ``(N,)`` scores of the model's whole output (else ``None``)."""

    def run(clone: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        hooks.reset(clone)
        xg = xin.requires_grad_(need_grad) if need_grad else xin
        with contextlib.ExitStack() as stack:
            if autocast is not None:
                stack.enter_context(torch.autocast(xin.device.type, dtype=autocast))
            raw = forward(model, xg)
            if not callable(target):
                return select_output(raw, key), None
            if hasattr(target, "scores_of"):  # a layerscope.targets region: it scores the chosen output
                out = select_output(raw, key) if key is not None else target.scores_of(raw)
                scores = _custom_scores(target, out, len(xin))
            else:
                scores = _custom_scores(target, raw, len(xin))
                out = select_output(raw, key)
            if out.ndim == 4:  # (N, K, H, W) per-pixel scores: each class's mean, for display
                out = out.detach().float().mean(dim=(2, 3))
            return out, scores

    with eval_mode(model), out_of_place(model), torch.set_grad_enabled(need_grad), hooks:
        out, scores = run(clone=False)
        if hooks.changed_in_place():
            out, scores = run(clone=True)
    hooks.check_ran()
    check_output(out)
    return out, scores


def _custom_scores(target: Callable[[Any], Any], raw: Any, n: int) -> torch.Tensor:
    """A callable target's ``(N,)`` scores of the model's output, checked."""
    scores = target(raw)
    if not isinstance(scores, torch.Tensor) or scores.reshape(-1).shape[0] != n or scores.numel() != n:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise UsageError(f"the target callable returned {got}; it must return one score per image, shape ({n},)")
    return scores.reshape(n).float()


class _Maps:
    """The layer maps of a run, kept on the device until :meth:`result`."""

    def __init__(
        self, fn: Callable[..., Any], context: dict[str, Any] | None = None, layouts: dict[str, Layout] | None = None
    ) -> None:
        self.fn = fn
        self.context = context or {}
        self.layouts = layouts if layouts is not None else {}
        self.maps: dict[str, torch.Tensor] = {}

    def keep(self, name: str, act: torch.Tensor, grad: torch.Tensor | None) -> None:
        with torch.no_grad():
            lay = self.layouts.get(name)
            act = act.detach()
            if lay is not None and lay.kind != "nchw":
                act, grad = lay(act), (None if grad is None else lay(grad))
            self.maps[name] = self.fn(fp32(act), fp32(grad), **self.context)

    def result(
        self,
        order: list[str],
        shapes: dict[str, tuple[int, ...]],
        out: torch.Tensor,
        targets: torch.Tensor,
        scores: torch.Tensor | None = None,
    ) -> CaptureResult:
        both = out if scores is None else torch.cat([out.float(), scores.detach()[:, None]], dim=1)
        cams, nonfinite, outputs, tgt = maps_to_host({n: self.maps.pop(n) for n in order}, both, targets)
        custom = None
        if scores is not None:  # the custom scores travelled as one more column
            outputs, custom = np.ascontiguousarray(outputs[:, :-1]), outputs[:, -1].copy()
        check_outputs_finite(outputs)
        grids = {n: self.layouts[n].note for n in order if n in self.layouts and self.layouts[n].note}
        return CaptureResult(
            layers=order,
            shapes=shapes,
            cams=cams,
            outputs=outputs,
            targets=tgt,
            nonfinite=nonfinite,
            grids=grids,
            scores=custom,
        )


def check_outputs_finite(outputs: np.ndarray) -> None:
    """NaN or inf in the model's *output* is an error (in activations it is a warning)."""
    bad = ~np.isfinite(outputs).all(axis=tuple(range(1, outputs.ndim)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(
            f"the model's output is NaN or inf for image {i} ({int(bad.sum())} of {len(bad)} images): "
            "check the weights and the input (a model that outputs NaN cannot be explained)"
        )


# --- guided backpropagation -----------------------------------------------------------------


class _GuidedReLU(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes ``grad · [grad > 0] · [x > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool) -> torch.Tensor:  # type: ignore[override]
        if inplace:
            out = x.clamp_(min=0)
            ctx.mark_dirty(x)
        else:
            out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0), None


_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}
_RELU = {torch.relu, torch.Tensor.relu, F.relu} | _RELU_INPLACE


class _GuidedMode(TorchFunctionMode):
    """Turns every ReLU call (module or functional) into a guided ReLU while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELU:
            x = args[0]
            inplace = func in _RELU_INPLACE or (func is F.relu and bool(kwargs.get("inplace", args[1:2] == (True,))))
            self.calls += 1
            return _GuidedReLU.apply(x, inplace)
        return func(*args, **kwargs)


@contextlib.contextmanager
def guided_relu() -> Iterator[_GuidedMode]:
    """Within the block every ReLU (``nn.ReLU`` in-place or not, ``F.relu``, ``torch.relu``,
    ``Tensor.relu``) back-propagates only positive gradients where its input was positive.

    Nothing in any model is changed: the calls are intercepted, and only inside the block.
    ``mode.calls`` counts the ReLUs rewritten.
    """
    mode = _GuidedMode()
    with mode:
        yield mode


# --- perturbation -----------------------------------------------------------------------------


class Probe:
    """What a perturbation method may do with the model, for one layer.

    Every call runs the model in eval mode without gradients, counts its forward passes on
    the shared progress bar, and returns the target's scores, one per input, on the model's
    device.
    """

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        layer: str,
        x: torch.Tensor,
        targets: torch.Tensor,
        outputs: torch.Tensor,
        probabilities: bool,
        progress: Any,
        key: Any = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.module = module
        self.layer = layer
        self.input = x
        self.targets = targets
        self._outputs = outputs
        self._probabilities = probabilities
        self._progress = progress
        self._key = key
        self._autocast = autocast
        self.forwards = 0

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if self._autocast is not None:
                stack.enter_context(torch.autocast(x.device.type, dtype=self._autocast))
            return select_output(forward(self.model, x), self._key)

    def _rows(self, rows: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.targets.device)

    def _pick(self, out: torch.Tensor, rows: Any, probability: bool) -> torch.Tensor:
        if probability and not self._probabilities:
            out = torch.softmax(out.float(), dim=1)
        return out.gather(1, self.targets[self._rows(rows)][:, None])[:, 0].float()

    def _count(self, m: int) -> None:
        self.forwards += m
        self._progress.update(m)

    def base_scores(self, probability: bool = False) -> torch.Tensor:
        """The target's output (or its softmax probability) for each unperturbed image."""
        return self._pick(self._outputs, np.arange(len(self.targets)), probability)

    def score(self, inputs: torch.Tensor, rows: Any, probability: bool = False) -> torch.Tensor:
        """The target's output for each input; ``rows[m]`` is the image input ``m`` came from
        (its target is scored). ``probability``: the softmax probability instead of the raw
        output (a model whose output already is a probability is used as it is)."""
        out = self._model(inputs.to(self.input.dtype))
        self._count(len(inputs))
        return self._pick(out, rows, probability)

    def score_replaced(self, outputs: torch.Tensor, rows: Any, probability: bool = False) -> torch.Tensor:
        """The target's output when this layer's output is ``outputs`` ``(M, C, h, w)``
        (a forward hook returns it) and image ``rows[m]`` is the input of copy ``m``."""
        done = False

        def replace(module: nn.Module, inputs: Any, output: Any) -> Any:
            nonlocal done
            if done:
                return None
            done = True
            if tuple(output.shape) != tuple(outputs.shape):
                raise ModelError(
                    f"layer {self.layer!r}: replacement of shape {tuple(outputs.shape)} for an output "
                    f"of shape {tuple(output.shape)}"
                )
            return outputs.to(output.dtype).clone()  # later in-place ops must not change the caller's tensor

        handle = self.module.register_forward_hook(replace)
        try:
            out = self._model(self.input[self._rows(rows).to(self.input.device)])
        finally:
            handle.remove()
        self._count(len(outputs))
        return self._pick(out, rows, probability)


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    return bool((out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones_like(out[:, 0]), atol=1e-4))


# --- the adapter ------------------------------------------------------------------------------


class TorchAdapter:
    """The :class:`~layerscope.capture.Adapter` for ``torch.nn.Module`` models."""

    name = "torch"

    def resolve_layers(self, model: nn.Module, spec: Any, info: ModelInfo | None = None) -> list[tuple[str, str]]:
        """``(display name, module path)`` pairs for ``spec`` (``None``: the default layers)."""
        return resolve_layers(model, spec, info)

    def layer_shapes(
        self, model: nn.Module, size: tuple[int, int], info: ModelInfo | None = None, every_module: bool = False
    ) -> list[LayerShape]:
        """Each default layer (every leaf module with ``every_module``) and its real per-image
        output shape for a ``size`` = ``(height, width)`` input, in forward order, from one
        forward pass of a zero image without gradients."""
        if every_module:
            friendly = {p: n for n, p in (info.layers if info is not None else {}).items()}
            chosen = [(friendly.get(p, p), p) for p, m in model.named_modules() if p and not list(m.children())]
        else:
            chosen = resolve_layers(model, None, info)
        paths = dict(chosen)
        channels = next((int(m.in_channels) for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
        with placed(model, None) as device:
            x = torch.zeros(1, channels, *(int(s) for s in size), device=device, dtype=model_dtype(model))
            hooks = _Hooks(model, chosen, strict=False)
            with eval_mode(model), torch.no_grad(), hooks:
                forward(model, x)
        return [LayerShape(n, paths[n], hooks.shapes[n]) for n in hooks.order]

    def run(
        self,
        model: nn.Module,
        x: Any,
        layers: Sequence[tuple[str, str]],
        targets: Any,
        request: CaptureRequest,
    ) -> CaptureResult:
        """What ``request`` asks for (see :class:`~layerscope.capture.CaptureRequest`)."""
        device = resolve_device(request.device) if request.device is not None else None
        with placed(model, device) as dev, precision_mode(request.precision, dev) as autocast:
            xin = _model_input(model, x, dev, channels_last=request.precision == "fast")
            if isinstance(xin, ModelInputs) and request.needs in ("perturbation", "saliency"):
                how = "perturbation" if request.needs == "perturbation" else "guided backpropagation"
                raise UsageError(
                    f"several model inputs work with the one-pass methods (Grad-CAM family, Eigen-CAM), "
                    f"not {request.label or 'this method'} ({how})"
                )
            if request.needs == "perturbation":
                return _perturbation(model, xin, layers, targets, request, autocast)
            context: dict[str, Any] = {}
            need_grad = request.needs == "gradients"
            if request.needs == "saliency":
                if callable(targets):
                    raise UsageError(f"a callable target works with the gradient methods, not {request.label}")
                context["saliency"], targets = _guided_saliency(model, xin, targets, request, autocast)
                need_grad = request.layer_gradients
            return _one_pass(model, xin, layers, targets, request, autocast, need_grad, context)


def _hw(x: torch.Tensor) -> tuple[int, int] | None:
    return (int(x.shape[-2]), int(x.shape[-1])) if x.ndim == 4 else None


def _one_pass(
    model: nn.Module,
    xin: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    request: CaptureRequest,
    autocast: torch.dtype | None,
    need_grad: bool,
    context: dict[str, Any],
) -> CaptureResult:
    hooks = _Hooks(model, layers, hw=_hw(xin), reshape=request.reshape)
    maps = _Maps(request.fn, context, hooks.layouts)
    try:
        out, scores = _capture_forward(model, xin, hooks, need_grad, autocast, request.output_key, target)
        targets = resolve_targets(out, getattr(target, "class_index", None) if scores is not None else target)
        order = list(hooks.order)
        if need_grad:
            score = None
            if scores is not None:
                score = scores.sum()
                if not score.requires_grad:
                    raise ModelError("the target callable's scores do not depend on the chosen layers")
            backward_to_maps(out, targets, hooks.acts, maps.keep, score)
        else:
            for name in order:
                maps.keep(name, hooks.acts.pop(name), None)
        return maps.result(order, hooks.shapes, out.detach(), targets, scores)
    finally:
        hooks.acts.clear()


def _guided_saliency(
    model: nn.Module, xin: torch.Tensor, target: Any, request: CaptureRequest, autocast: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided backpropagation: ``(∂y/∂x through guided ReLUs, targets)`` for a batch."""
    xg = xin.detach().clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.enable_grad())
        mode = stack.enter_context(guided_relu())
        if autocast is not None:
            stack.enter_context(torch.autocast(xin.device.type, dtype=autocast))
        out = select_output(forward(model, xg), request.output_key)
    check_output(out)
    targets = resolve_targets(out, target)
    score = target_scores(out, targets)
    if not score.requires_grad:
        raise ModelError("the model's output does not depend on its input")
    (saliency,) = torch.autograd.grad(score, xg)
    if mode.calls == 0:
        warnings.warn(
            f"{request.label or 'guided backpropagation'}: the model calls no ReLU, so guided backpropagation "
            "is the plain input gradient",
            stacklevel=4,
        )
    return fp32(saliency.detach()), targets


def _perturbation(
    model: nn.Module,
    xin: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    request: CaptureRequest,
    autocast: torch.dtype | None,
) -> CaptureResult:
    from tqdm.auto import tqdm

    modules = dict(model.named_modules())
    paths = dict(layers)
    hooks = _Hooks(model, layers, hw=_hw(xin), reshape=request.reshape)
    if callable(target):
        raise UsageError(f"a callable target works with the gradient methods, not {request.label or 'this method'}")
    out, _ = _capture_forward(model, xin, hooks, False, autocast, request.output_key)
    n = int(out.shape[0])
    targets = resolve_targets(out, target)
    order = list(hooks.order)
    passes = request.forward_passes
    total = sum(passes(n, hooks.shapes[name][0]) for name in order) if passes else None
    if total is not None:
        logger.info(
            "%s: %d forward passes (%d layer%s, %d image%s) before the maps are ready",
            request.label or "perturbation method",
            total,
            len(order),
            "" if len(order) == 1 else "s",
            n,
            "" if n == 1 else "s",
        )
    probabilities = request.output == "probabilities" or (request.output is None and _looks_like_probabilities(out))
    maps = _Maps(request.fn, layouts=hooks.layouts)
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        progress = stack.enter_context(
            tqdm(total=total, desc=request.label or None, unit="forward", disable=None, leave=False)
        )
        for name in order:
            act = hooks.acts.pop(name).detach()
            probe = Probe(
                model,
                modules[paths[name]],
                name,
                xin,
                targets,
                out,
                probabilities,
                progress,
                request.output_key,
                autocast,
            )
            maps.context = {"probe": probe}
            maps.keep(name, act, None)
    return maps.result(order, hooks.shapes, out.detach(), targets)
