"""What the embedding targets (:func:`~layerscope.targets.text`,
:func:`~layerscope.targets.similar_to`) share: a target that says how to run the model
(``run_model``) and scores one column of the ``(N, K)`` similarities it returns.

The protocol the torch capture honours, written once here:

* ``run_model(model, x)``: the model's output for the pixels ``x``, called by the capture
  instead of ``model(x)`` (a CLIP model needs more than pixels to run its ``forward``);
* ``__call__(output)``: the ``(N,)`` explained scores of that output;
* ``class_index``: which output column each image explains (``Explanation.targets``);
* ``labels``: the name of each column (``Explanation.class_names``); ``kind``: what a
  column is (``"text"``, ``"image"``; ``Explanation.target_kind``).

Torch is imported only when a target is made or called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from layerscope.errors import UsageError

#: The longest label (a prompt, a file name) before it is cut with "…".
LABEL_CHARS = 40

#: Keys and attributes under which a model output keeps its ``(N, D)`` embedding
#: (transformers 5's ``get_image_features`` returns a ``BaseModelOutputWithPooling`` whose
#: ``pooler_output`` is the projected embedding; 4.x returns the tensor itself).
EMBEDDING_KEYS = ("image_embeds", "text_embeds", "embeddings", "pooler_output")

#: ``{kind: (the caption's word, the name of the explained score)}``; a class target is
#: ``("Class", None)``: its caption shows the probability.
KINDS = {"class": ("Class", None), "text": ("Text", "logit"), "image": ("Similar to", "cos"), "box": ("Box", None)}


def described(kind: str, label: str, probability: float, score: float, columns: int = 1) -> str:
    """A target as a caption says it: ``Class: tabby (p = 0.93)``, ``Text: "a photo of a cat"
    (logit 24.31)``, ``Similar to: "b.jpg" (cos 0.87)``, ``Box: (12,8,40,52) cat (p = 0.91)``;
    a prompt among several (``columns`` > 1) adds CLIP's probability over them."""
    word, name = KINDS.get(kind, KINDS["class"])
    p = f"p = {float(probability):.2f}"
    if name is None:
        return f"{word}: {label} ({p})"
    return f"{word}: {label} ({name} {float(score):.2f}{', ' + p if kind == 'text' and columns > 1 else ''})"


def quoted(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` in double quotes on one line, cut to ``limit`` characters with "…"."""
    one = " ".join(str(text).split())
    return f'"{one if len(one) <= limit else one[: limit - 1].rstrip() + "…"}"'


def embedding_of(output: Any, what: str) -> Any:
    """The ``(N, D)`` embedding tensor of a model's output (a tensor, a dict /
    ``ModelOutput`` with one of :data:`EMBEDDING_KEYS`, or a tuple whose first item is it)."""
    import torch

    found = output
    if not isinstance(found, torch.Tensor):
        found = next((_get(output, k) for k in EMBEDDING_KEYS if isinstance(_get(output, k), torch.Tensor)), None)
    if found is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        found = output[0]
    if not isinstance(found, torch.Tensor):
        raise UsageError(f"{what}: the model returned a {type(output).__name__}, not an (N, D) embedding")
    if found.ndim != 2:
        raise UsageError(
            f"{what}: the model's embedding has shape {tuple(found.shape)}; expected (N, D), one vector per image"
        )
    return found


def _get(output: Any, key: str) -> Any:
    if hasattr(output, "keys") and key in output.keys():
        return output[key]
    return getattr(output, key, None) if not isinstance(output, dict) else None


def normalised(t: Any) -> Any:
    """Each row of ``t`` divided by its L2 norm (as CLIP does, in float32)."""
    t = t.float()
    return t / t.pow(2).sum(dim=-1, keepdim=True).pow(0.5)


def model_device(model: Any) -> Any:
    """The device of the model's first parameter (the CPU for a model without any)."""
    import torch

    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def inference(model: Any) -> Iterator[None]:
    """The model in eval mode without gradients, every module's ``training`` flag restored
    afterwards (a target's fixed embedding is computed as the capture runs the model)."""
    import torch

    modules = list(model.modules()) if hasattr(model, "modules") else []
    flags = [m.training for m in modules]
    try:
        for m in modules:
            m.training = False
        with torch.no_grad():
            yield
    finally:
        for m, flag in zip(modules, flags, strict=True):
            m.training = flag


class EmbeddingTarget:
    """A target whose model output is an ``(N, K)`` similarity to ``K`` fixed embeddings
    (one per prompt or reference image); image ``n`` explains column ``n`` (or column 0 for
    every image when ``K == 1``)."""

    kind = "class"
    name = "target"

    def __init__(self, model: Any, labels: Sequence[str]) -> None:
        self.model = model
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_index(self) -> int | list[int]:
        """Column 0 for every image (one embedding), else column ``n`` for image ``n``."""
        return 0 if len(self.labels) == 1 else list(range(len(self.labels)))

    def similarities(self, model: Any, x: Any) -> Any:
        """The ``(N, K)`` scores of the pixels ``x`` (a subclass's own)."""
        raise NotImplementedError

    def run_model(self, model: Any, x: Any) -> Any:
        """The ``(N, K)`` scores for the capture's forward pass (the protocol above)."""
        import torch

        if model is not self.model:
            raise UsageError(
                f"this {self.name}() target was made for another model: make it with {self.name}(..., model=M) "
                "for the model M you explain"
            )
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise UsageError(f"{self.name}() explains images: give an image batch (N, C, H, W), not several inputs")
        return self.similarities(model, x)

    def __call__(self, output: Any) -> Any:
        """``(N,)``: each image's own column of the ``(N, K)`` scores."""
        import torch

        n, k = int(output.shape[0]), len(self.labels)
        if k == 1:
            return output[:, 0]
        if k != n:
            what = "prompts" if self.kind == "text" else "reference images"
            raise UsageError(
                f"{k} {what} for {n} image{'s' if n != 1 else ''}: give one, one per image, or "
                f"explain_many(model, image, targets={self.name}([...], model=M)) for one explanation each"
            )
        return output.gather(1, torch.arange(n, device=output.device)[:, None])[:, 0]

    def __repr__(self) -> str:
        shown = ", ".join(self.labels[:3]) + (", …" if len(self.labels) > 3 else "")
        return f"{self.name}({shown})"
