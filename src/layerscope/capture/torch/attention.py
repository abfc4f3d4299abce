"""The attention capture (the ``"attention"`` need): every transformer block's attention
weights from one forward pass, their gradients from one backward pass, without changing
the user's model.

Where the weights come from, per block (the first attention module found in it):

* **timm-style** attention (a module with ``qkv`` and ``attn_drop``): ``fused_attn`` is set
  to ``False`` for the call, and a pre-hook on ``attn_drop`` keeps its input, the softmaxed
  weights;
* ``nn.MultiheadAttention``: a pre-hook asks it for ``need_weights=True,
  average_attn_weights=False`` (per head), torch's fused "fast path" of
  ``nn.TransformerEncoderLayer`` is turned off for the call, and its output is recomputed
  from the returned weights (:func:`mha_output_through_weights`) so that the weights'
  gradient is the attention's own;
* **Hugging Face** attention (a ``…Attention`` module with a ``config``): every config of
  the model is switched to the ``"eager"`` attention implementation for the call, and the
  module's output ``(out, weights)`` gives the weights.

Everything is restored afterwards, also after an error. With ``"layer_scores"`` (LeGrad)
each block's output is also scored by the model's own head: the hooks hand block ``l + 1``
a detached copy of block ``l``'s output and append every block's output to the last
block's output along the batch axis, so the layers after the last block score all ``L``
blocks in one pass, and the gradient of the summed scores w.r.t. block ``l``'s attention is
that of block ``l``'s own score.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layerscope.capture._autograd import join_scores, target_scores, torch_maps
from layerscope.capture._layers import token_grid
from layerscope.capture._request import CaptureRequest, CaptureResult
from layerscope.capture.torch.hooks import _Hooks, capture_forward, input_hw
from layerscope.capture.torch.layers import vision_blocks
from layerscope.capture.torch.layouts import patch_size, prefix_tokens
from layerscope.capture.torch.model_io import resolve_targets
from layerscope.errors import ModelError, UsageError

_MISSING = object()


def _attention_module(block: nn.Module) -> tuple[str, nn.Module] | None:
    """``(kind, module)`` of a block's attention: ``"timm"``, ``"mha"``, ``"hf"`` or ``"other"``."""
    found: dict[str, nn.Module] = {}
    for m in block.modules():
        if isinstance(getattr(m, "qkv", None), nn.Module) and isinstance(getattr(m, "attn_drop", None), nn.Module):
            found.setdefault("timm", m)
        elif isinstance(m, nn.MultiheadAttention):
            found.setdefault("mha", m)
        elif "Attention" in type(m).__name__:
            found.setdefault("hf" if hasattr(getattr(m, "config", None), "_attn_implementation") else "other", m)
    for kind in ("timm", "mha", "hf", "other"):
        if kind in found:
            return kind, found[kind]
    return None


def _configs(model: nn.Module) -> list[Any]:
    """Every Hugging Face config of the model's modules and their sub-configs, once each."""
    seen: dict[int, Any] = {}
    stack = [getattr(m, "config", None) for m in model.modules()]
    while stack:
        c = stack.pop()
        if c is None or id(c) in seen or not hasattr(c, "_attn_implementation"):
            continue
        seen[id(c)] = c
        stack.extend(getattr(c, key, None) for key in getattr(c, "sub_configs", {}) or {})
    return list(seen.values())


@contextlib.contextmanager
def _eager(model: nn.Module) -> Iterator[None]:
    """Every HF config of ``model`` on the eager attention path, restored afterwards."""
    saved = [(c, c.__dict__.get("_attn_implementation_internal", _MISSING)) for c in _configs(model)]
    try:
        for c, _ in saved:
            c._attn_implementation = "eager"
        yield
    finally:
        for c, value in reversed(saved):
            if value is _MISSING:
                c.__dict__.pop("_attn_implementation_internal", None)
            else:
                c.__dict__["_attn_implementation_internal"] = value


@contextlib.contextmanager
def _flag(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    old = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(old)


def _mha_pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    args, kwargs = list(args), dict(kwargs)
    for pos, key, value in ((4, "need_weights", True), (6, "average_attn_weights", False)):
        if len(args) > pos:
            args[pos] = value
        else:
            kwargs[key] = value
    return tuple(args), kwargs


def _mha_arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, key: str) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(key)


def mha_output_through_weights(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], weights: torch.Tensor
) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s output recomputed from the ``(N, H, T, S)`` weights it
    returned: ``out_proj(concat_h(A_h · V_h))`` with ``V = value · W_vᵀ + b_v``, equal to its
    own output to rounding. Torch returns the weights as a view taken *after* it used them,
    so no gradient reaches that view; the capture hands on this output instead, and the
    score's gradient w.r.t. the kept weights is then the attention's own. ``None`` where the
    keys are not the value's rows (``add_bias_kv``, ``add_zero_attn``)."""
    if module.bias_k is not None or module.add_zero_attn:
        return None
    value = _mha_arg(args, kwargs, 2, "value")
    if not isinstance(value, torch.Tensor) or value.ndim not in (2, 3):
        return None
    v = value[None] if value.ndim == 2 else (value if module.batch_first else value.transpose(0, 1))
    e, h = module.embed_dim, module.num_heads
    w_v = module.in_proj_weight[2 * e :] if module._qkv_same_embed_dim else module.v_proj_weight
    b_v = module.in_proj_bias[2 * e :] if module.in_proj_bias is not None else None
    vv = F.linear(v, w_v, b_v)  # (N, S, E)
    n, src = vv.shape[0], vv.shape[1]
    if weights.shape[:2] != (n, h) or weights.shape[-1] != src:
        return None
    heads = weights.to(vv.dtype) @ vv.reshape(n, src, h, e // h).transpose(1, 2)  # (N, H, T, E/H)
    out = F.linear(heads.transpose(1, 2).reshape(n, -1, e), module.out_proj.weight, module.out_proj.bias)
    if value.ndim == 2:
        return out[0]
    return out if module.batch_first else out.transpose(0, 1)


def _weights_of(output: Any) -> torch.Tensor | None:
    """The ``(N, H, T, T)`` weights in an attention module's tuple output."""
    if isinstance(output, (tuple, list)):
        for o in output[1:]:
            if isinstance(o, torch.Tensor) and o.ndim == 4:
                return o
    return None


class AttentionHooks:
    """Hooks that keep each block's attention weights (:attr:`kept`), with the model switched
    to its weight-giving attention path for the ``with`` block."""

    def __init__(self, model: nn.Module, blocks: Sequence[str]) -> None:
        self.model = model
        self.blocks = list(blocks)
        self.kept: dict[str, torch.Tensor] = {}
        #: blocks whose kept weights get no gradient (an ``nn.MultiheadAttention`` that could
        #: not be recomputed from them)
        self.gradless: set[str] = set()
        self.found: dict[str, tuple[str, nn.Module]] = {}
        for b in self.blocks:
            att = _attention_module(model.get_submodule(b))
            if att is not None:
                self.found[b] = att
        self._stack = contextlib.ExitStack()

    def _keep(self, block: str, weights: Any) -> None:
        if isinstance(weights, torch.Tensor) and block not in self.kept:
            self.kept[block] = weights

    def _softmaxed(self, block: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self._keep(block, inputs[0] if inputs else None)

        return hook

    def _returned(self, block: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._keep(block, _weights_of(output))

        return hook

    def _mha_returned(self, block: str) -> Callable[..., Any]:
        def hook(module: nn.MultiheadAttention, args: Any, kwargs: Any, output: Any) -> Any:
            weights = _weights_of(output)
            self._keep(block, weights)
            out = None if weights is None else mha_output_through_weights(module, args, kwargs, weights)
            if out is None:
                self.gradless.add(block)  # weights, but no gradient reaches them
                return None
            return (out, *output[1:])

        return hook

    def __enter__(self) -> AttentionHooks:
        st = self._stack
        try:
            kinds = {kind for kind, _ in self.found.values()}
            if "hf" in kinds:
                st.enter_context(_eager(self.model))
            if "mha" in kinds:
                st.enter_context(_mha_fastpath_off())
            for b, (kind, m) in self.found.items():
                if kind == "timm":
                    if hasattr(m, "fused_attn"):
                        st.enter_context(_flag(m, "fused_attn", False))
                    st.callback(m.attn_drop.register_forward_pre_hook(self._softmaxed(b)).remove)
                elif kind == "mha":
                    st.callback(m.register_forward_pre_hook(_mha_pre_hook, with_kwargs=True).remove)
                    st.callback(m.register_forward_hook(self._mha_returned(b), with_kwargs=True).remove)
                else:
                    st.callback(m.register_forward_hook(self._returned(b)).remove)
        except BaseException:
            st.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first(output: Any, t: torch.Tensor) -> Any:
    if isinstance(output, (tuple, list)):
        return type(output)((t, *output[1:])) if isinstance(output, tuple) else [t, *output[1:]]
    return t


@contextlib.contextmanager
def block_scores(model: nn.Module, blocks: Sequence[str]) -> Iterator[None]:
    """Every block's output scored by the model's own head (see the module docstring)."""
    outs: list[torch.Tensor] = []

    def inner(module: nn.Module, inputs: Any, output: Any) -> Any:
        t = _first(output)
        outs.append(t)
        return _replace_first(output, t.detach().requires_grad_(t.requires_grad))

    def last(module: nn.Module, inputs: Any, output: Any) -> Any:
        t = _first(output)
        if any(o.shape[1:] != t.shape[1:] for o in outs):
            return None  # token counts change between blocks (Swin): refused after the pass, saying why
        return _replace_first(output, torch.cat([*outs, t], dim=0))

    handles = [model.get_submodule(b).register_forward_hook(inner) for b in blocks[:-1]]
    try:
        handles.append(model.get_submodule(blocks[-1]).register_forward_hook(last))
        yield
    finally:
        for h in handles:
            h.remove()
        outs.clear()


def _checked_weights(model: nn.Module, hooks: AttentionHooks, n: int, label: str) -> list[torch.Tensor]:
    name = type(model).__name__
    weights = []
    for b in hooks.blocks:
        w = hooks.kept.get(b)
        if w is None:
            att = hooks.found.get(b)
            what = f"its attention {type(att[1]).__name__}" if att is not None else "it has no attention module that"
            raise UsageError(
                f"{label} needs attention weights, and {name}'s block {b!r} gives none: {what} "
                "computes attention in a fused kernel (SDPA / flash) that returns no weights"
            )
        weights.append(w)
    first = weights[0]
    att_name = type(hooks.found[hooks.blocks[0]][1]).__name__
    same = all(w.shape[-2:] == first.shape[-2:] for w in weights)
    if first.shape[0] != n or not same or first.shape[-1] != first.shape[-2]:
        raise UsageError(
            f"{label} does not apply to {name}: its attention ({att_name}, weights "
            f"{tuple(first.shape)} for {n} image(s)) is windowed or changes its token count between blocks "
            "(Swin), so no class token attends to every patch; rollout, gradrollout and legrad need global "
            "self-attention with a class token (ViT, DeiT); use a Grad-CAM method at Swin's blocks instead"
        )
    return weights


def _enclosing_block(name: str, path: str, blocks: Sequence[str]) -> tuple[str, str]:
    """A layer inside a block (the default layers of a class-token ViT are each block's
    attention input, ``….layernorm_before``) stands for that block; a friendly name is kept."""
    if path in blocks:
        return name, path
    for b in blocks:
        if path.startswith(b + "."):
            return (b if name == path else name), b
    return name, path


def attention_pass(
    model: nn.Module,
    xin: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    target: Any,
    request: CaptureRequest,
    autocast: torch.dtype | None,
) -> CaptureResult:
    """One forward pass keeping every block's attention weights (one backward pass for their
    gradients when ``request.needs`` holds ``"gradients"``); ``request.fn`` makes all the
    blocks' maps at once and the chosen ``layers`` (blocks) are returned."""
    label = request.label or "this method"
    name = type(model).__name__
    blocks = vision_blocks(model)  # CLIP: the image tower's (the text tower does not run)
    if not blocks:
        raise UsageError(f"{label} explains a vision transformer's attention, and {name} has no transformer block")
    layers = [_enclosing_block(n, p, blocks) for n, p in layers]
    bad = [n for n, p in layers if p not in blocks]
    if bad:
        raise UsageError(
            f"{label} gives one map per transformer block; {bad[0]!r} is not a block of {name} "
            f"(its blocks: {', '.join(blocks)})"
        )
    need_grad = "gradients" in request.needs
    per_block = "layer_scores" in request.needs
    runs_model = hasattr(target, "run_model")  # a CLIP prompt: rollout needs it only to run the model
    if callable(target) and (per_block or (not need_grad and not runs_model)):
        raise UsageError(f"a callable target works with gradrollout and the Grad-CAM family, not {label}")
    n = int(xin.shape[0])
    hooks = AttentionHooks(model, blocks)
    with hooks, block_scores(model, blocks) if per_block else contextlib.nullcontext():
        out, scores = capture_forward(model, xin, _Hooks(model, []), need_grad, autocast, request.output_key, target)
    if need_grad and hooks.gradless:
        b = sorted(hooks.gradless)[0]
        raise UsageError(
            f"{label} needs the gradient of the attention weights, and {name}'s block {b!r} has an "
            "nn.MultiheadAttention with add_bias_kv or add_zero_attn, whose weights layerscope cannot follow; "
            "rollout works there"
        )
    try:
        return _maps(model, hooks, out, scores, layers, target, request, n, input_hw(xin), per_block, label)
    finally:
        hooks.kept.clear()


def _maps(
    model: nn.Module,
    hooks: AttentionHooks,
    out: torch.Tensor,
    scores: torch.Tensor | None,
    layers: Sequence[tuple[str, str]],
    target: Any,
    request: CaptureRequest,
    n: int,
    hw: tuple[int, int] | None,
    per_block: bool,
    label: str,
) -> CaptureResult:
    weights = _checked_weights(model, hooks, n, label)
    tokens = int(weights[0].shape[-1])
    found = token_grid(tokens, hw, patch_size(model), prefix_tokens(model)) if hw is not None else None
    if found is None or found[0] == 0:
        why = "no grid of the input's patches" if found is None else "no class token in front of the patch tokens"
        raise UsageError(f"{label} needs a class token: {type(model).__name__}'s {tokens} tokens have {why}")
    extra, grid = found
    blocks = hooks.blocks
    final = out
    if per_block:
        if out.shape[0] != len(blocks) * n:
            raise ModelError(
                f"{label} scores every block's tokens with {type(model).__name__}'s own head (the layers after "
                f"its last block), which gave {int(out.shape[0])} rows for {len(blocks)} blocks × {n} image(s)"
            )
        final = out[-n:]
    key = getattr(target, "class_index", None) if scores is not None else target
    targets = resolve_targets(final, key)
    grads = None
    if "gradients" in request.needs:
        if scores is not None:
            score = scores.sum()
        elif per_block:
            per = out.reshape(len(blocks), n, -1)
            with torch.enable_grad():
                score = per.gather(2, targets.to(out.device)[None, :, None].expand(len(blocks), n, 1)).float().sum()
        else:
            score = target_scores(out, targets)
        if not score.requires_grad:
            raise ModelError("the explained score does not depend on the attention weights")
        got = torch.autograd.grad(score, weights, allow_unused=True)
        grads = torch.stack([torch.zeros_like(w) if g is None else g for w, g in zip(weights, got, strict=True)])
        grads = grads.detach().float()
    with torch.no_grad():
        maps = request.fn(torch.stack([w.detach() for w in weights]).float(), grads, extra=extra, grid=grid)
    collect = torch_maps(_first_arg)
    index = {b: i for i, b in enumerate(blocks)}
    for layer, path in layers:
        collect.keep(layer, maps[index[path]], None)
    order = [layer for layer, _ in layers]
    result = collect.finish(
        order,
        final.detach(),
        targets,
        shapes={layer: tuple(int(s) for s in weights[index[p]].shape[1:]) for layer, p in layers},
        scores=scores,
        join=join_scores if scores is not None else None,
    )
    result.grids = {layer: f"tokens {tokens} → {grid[0]}×{grid[1]}" for layer in order}
    return result


def _first_arg(a: Any, g: Any) -> Any:
    return a
