"""The torch pieces shared by the torch adapter and Keras on the torch backend.

:func:`backward_to_maps` is the one backward pass: each captured activation's map is made
the moment its gradient is known, on the device. :func:`maps_to_host` is the one transfer
at the end of a batch: every map, the outputs and the targets go to the host together, and
the finiteness of each map is checked there on the device first. Nothing here (and nothing
per layer) calls ``.item()``, ``float(tensor)``, ``.cpu()``, ``.numpy()`` or ``.tolist()``
before that transfer, so a GPU pipeline is never stalled inside the pass.

Imported lazily (torch is imported here at module level).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from layerscope.capture._maps import Maps, host_transfer
from layerscope.capture._request import PRECISIONS
from layerscope.errors import ModelError, UsageError


def _children(node: Any) -> list[Any]:
    return [c for c, _ in node.next_functions if c is not None]


def deepest(acts: dict[str, torch.Tensor], children: Callable[[Any], list[Any]] = _children) -> list[torch.Tensor]:
    """The captured activations with no other captured activation below them in the graph.

    Asking autograd for these alone reaches every captured activation (each lies on a path
    from the score to one of them) and stops the backward pass there. Whether a captured
    activation lies below a node is computed once per node of the graph (an iterative
    post-order walk with one shared memo): ``O(graph)`` in all, not per layer.
    ``children(node)`` lists a graph node's inputs (a parameter so a test can count visits).
    """
    by_node: dict[Any, list[torch.Tensor]] = {}
    for a in acts.values():
        if a.grad_fn is not None:
            by_node.setdefault(a.grad_fn, []).append(a)
    below: dict[Any, bool] = {}  # node -> a captured activation's node lies below it

    def has_below(root: Any) -> bool:
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in below:
                continue
            kids = children(node)
            if expanded:
                below[node] = any(c in by_node or below[c] for c in kids)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in kids if c not in below)
        return below[root]

    out: list[torch.Tensor] = []
    for node, tensors in by_node.items():
        if not has_below(node):
            out.extend(t for t in tensors if all(t is not o for o in out))
    return out


def target_scores(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``Σ_i out[i, targets[i]]`` in float32, inside the graph even under an outer ``no_grad``."""
    with torch.enable_grad():
        return out.gather(1, targets.to(out.device)[:, None]).float().sum()


def backward_to_maps(
    out: torch.Tensor,
    targets: torch.Tensor,
    acts: dict[str, torch.Tensor],
    keep: Callable[[str, torch.Tensor, torch.Tensor], None],
    score: torch.Tensor | None = None,
    blocked: dict[str, str] | None = None,
) -> None:
    """The one backward pass of the target scores ``Σ_i out[i, targets[i]]``.

    The gradient with respect to each captured activation goes to ``keep(name, activation,
    gradient)`` (under ``no_grad``) the moment it is known, and ``acts`` lets go of both.
    Autograd is asked only for the deepest activations, so the pass stops there and no
    ``.grad`` is written. A layer the score does not depend on gets a zero gradient.
    ``score``: a scalar to differentiate instead (a callable target's summed scores).
    ``blocked``: gets the names of the layers the score does not depend on.
    """
    if score is None:
        score = target_scores(out, targets)
    if not score.requires_grad:
        raise ModelError("the model's output does not depend on the chosen layers")
    for name, act in list(acts.items()):
        if act.grad_fn is None:
            raise ModelError(f"layer {name!r} is not connected to the output")

        def on_grad(grad: torch.Tensor, name: str = name) -> None:
            if name in acts:
                with torch.no_grad():
                    keep(name, acts.pop(name), grad)

        act.register_hook(on_grad)
    torch.autograd.grad(score, deepest(acts), allow_unused=True)
    with torch.no_grad():
        for name in list(acts):  # a layer the score does not depend on
            if blocked is not None:
                blocked[name] = "output"
            act = acts.pop(name)
            keep(name, act, torch.zeros_like(act))


def method_scores(out: torch.Tensor, targets: torch.Tensor, score: Callable[[Any, Any], Any]) -> torch.Tensor:
    """A method's own score of the output (``CaptureRequest.score``), checked, summed over the
    images in float32, inside the graph even under an outer ``no_grad``."""
    with torch.enable_grad():
        s = score(out, targets.to(out.device))
    n = int(out.shape[0])
    if not isinstance(s, torch.Tensor) or tuple(s.shape) != (n,):
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ModelError(f"the method's score has shape {got}; expected one score per image, ({n},)")
    return s.float().sum()


def hessian_to_maps(
    out: torch.Tensor,
    targets: torch.Tensor,
    acts: dict[str, torch.Tensor],
    keep: Callable[..., None],
    score: torch.Tensor | None = None,
    blocked: dict[str, str] | None = None,
) -> None:
    """The gradients *and* the Hessian–vector products ``H_l A_l = ∂/∂A_l ⟨∂y/∂A_l, A_l⟩``
    (``A_l`` held constant in the product) of every captured layer: one backward with
    ``create_graph=True``, then one double backward for all layers together.

    Each layer's product needs its own Hessian block: a single double backward of
    ``Σ_l ⟨∂y/∂A_l, A_l⟩`` would mix the layers (``Σ_m H_lm A_m``). So the double backward
    is one ``torch.autograd.grad`` call batched over the layers (``is_grads_batched``):
    vector ``l`` of the batch is ``A_l`` on layer ``l``'s gradient and zero elsewhere, and
    layer ``l`` keeps its entry ``l``. That costs about as much as ``L`` Hessian–vector
    products (vectorised) and memory for ``L`` copies of every captured activation.
    ``keep(name, A, G, hvp=HA)`` gets each layer once it is all known. ``score`` and
    ``blocked`` as for :func:`backward_to_maps`.
    """
    if score is None:
        score = target_scores(out, targets)
    if not score.requires_grad:
        raise ModelError("the model's output does not depend on the chosen layers")
    names = list(acts)
    for name in names:
        if acts[name].grad_fn is None:
            raise ModelError(f"layer {name!r} is not connected to the output")
    tensors = [acts[n] for n in names]
    grads = list(torch.autograd.grad(score, tensors, create_graph=True, allow_unused=True))
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    hvps: list[torch.Tensor | None] = [None] * len(names)
    if live:
        vectors = []
        for j, i in enumerate(live):
            v = tensors[i].new_zeros((len(live), *tensors[i].shape))
            v[j] = tensors[i].detach()
            vectors.append(v)
        got = torch.autograd.grad(
            [grads[i] for i in live],
            [tensors[i] for i in live],
            grad_outputs=vectors,
            is_grads_batched=True,
            allow_unused=True,
        )
        del vectors
        for j, i in enumerate(live):
            hvps[i] = None if got[j] is None else got[j][j]
        del got
    with torch.no_grad():
        for i, name in enumerate(names):
            act = acts.pop(name)
            g, h = grads[i], hvps[i]
            grads[i] = hvps[i] = None
            if g is None and blocked is not None:  # a layer the score does not depend on
                blocked[name] = "output"
            keep(
                name,
                act,
                torch.zeros_like(act) if g is None else g.detach(),
                hvp=torch.zeros_like(act) if h is None else h.detach(),
            )


def fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` in float32 when it is a lower-precision float (CAM math runs in fp32)."""
    if t is None or t.dtype in (torch.float32, torch.float64) or not t.is_floating_point():
        return t
    return t.float()


def maps_to_host(
    maps: dict[str, torch.Tensor], outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[dict[str, np.ndarray], list[str], np.ndarray, np.ndarray]:
    """The one device→host transfer of a batch of torch maps
    (:func:`layerscope.capture._maps.host_transfer`; pinned and asynchronous on CUDA).

    Returns:
        ``(maps, names of maps that had NaN/inf, outputs (N, K) float32, targets (N,) int64)``.
    """
    with torch.no_grad():
        return host_transfer(maps, outputs, targets, TORCH_OPS)


class TorchOps:
    """:class:`~layerscope.capture._maps.ArrayOps` for torch tensors."""

    def f32(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().float() if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t)).float()

    def all_finite(self, t: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(t).all()

    def zeroed_flat(self, t: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).reshape(-1)

    def stack(self, flags: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(flags).float()

    def flat(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().float().reshape(-1)

    def cat(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(pieces)

    def to_numpy(self, buf: torch.Tensor) -> np.ndarray:
        if buf.device.type == "cuda":
            host = torch.empty(buf.shape, dtype=buf.dtype, pin_memory=True)
            host.copy_(buf, non_blocking=True)
            torch.cuda.current_stream(buf.device).synchronize()
        elif buf.device.type == "cpu":
            host = buf
        else:
            host = buf.to("cpu")
        return host.numpy()

    def shape(self, t: torch.Tensor) -> tuple[int, ...]:
        return tuple(int(s) for s in t.shape)


TORCH_OPS = TorchOps()


def torch_maps(
    fn: Callable[..., Any], context: dict[str, Any] | None = None, layouts: dict[str, Any] | None = None
) -> Maps:
    """The maps collector of a torch run (:class:`~layerscope.capture._maps.Maps`)."""
    return Maps(fn, TORCH_OPS, context=context, layouts=layouts, prepare=_detach, fp32=fp32, guard=torch.no_grad)


def _detach(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


def join_scores(out: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """A callable target's scores as one more output column (split off on the host)."""
    return torch.cat([out.float(), scores.detach()[:, None]], dim=1)


def _tf32_flags() -> list[tuple[Any, str, Any]]:
    """``(object, attribute, value-for-highest)`` of every flag that allows TF32."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):  # torch ≥ 2.9: the new API (never mix the two)
        return [(b.cuda.matmul, "fp32_precision", "ieee"), (b.cudnn.conv, "fp32_precision", "ieee")]
    return [(b.cuda.matmul, "allow_tf32", False), (b.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def precision_mode(precision: str, device: torch.device) -> Iterator[torch.dtype | None]:
    """Run a pass in one of :data:`PRECISIONS`; yields the autocast dtype (``None``: none).

    ``"default"`` changes nothing (on CUDA, PyTorch's own TF32 settings apply);
    ``"highest"`` turns TF32 off for the pass (flags restored afterwards), so GPU maps
    agree with CPU maps; ``"fast"`` runs the forward pass under float16 autocast on CUDA
    and MPS (the caller also makes the input channels-last) — the CAM math still runs in
    float32. On the CPU ``"fast"`` uses no autocast (bfloat16 was measured slower there and
    far less faithful), only channels-last inputs.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "default":
        yield None
    elif precision == "highest":
        flags = _tf32_flags()
        saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in flags]
        prev_matmul = torch.get_float32_matmul_precision()
        try:
            for obj, attr, value in flags:
                setattr(obj, attr, value)
            if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
                torch.set_float32_matmul_precision("highest")
            yield None
        finally:
            for obj, attr, value in saved:
                setattr(obj, attr, value)
            if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
                torch.set_float32_matmul_precision(prev_matmul)
    else:
        yield torch.float16 if device.type in ("cuda", "mps") else None
