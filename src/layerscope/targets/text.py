"""The CLIP target, :func:`text`: the image–text similarity of a prompt, as the model itself
scores it (``logits_per_image``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layerscope.errors import UsageError
from layerscope.info import info_for
from layerscope.targets._embedding import EmbeddingTarget, embedding_of, inference, model_device, normalised, quoted

#: What a model needs to be explained against a prompt: transformers' ``CLIPModel``,
#: ``SiglipModel`` … have the first; OpenCLIP's ``CLIP`` / ``CustomTextCLIP`` the second.
DUAL_ENCODER = ("get_image_features", "get_text_features", "logit_scale")
OPEN_CLIP = ("encode_image", "encode_text", "logit_scale")


def is_dual_encoder(model: Any) -> bool:
    """Whether ``model`` has an image and a text tower and a logit scale (CLIP), in
    transformers' (:data:`DUAL_ENCODER`) or OpenCLIP's (:data:`OPEN_CLIP`) interface."""
    return any(all(hasattr(model, a) for a in names) for names in (DUAL_ENCODER, OPEN_CLIP))


def _is_open_clip(model: Any) -> bool:
    return not hasattr(model, "get_image_features") and all(hasattr(model, a) for a in OPEN_CLIP)


def image_features(model: Any, x: Any) -> Any:
    """A CLIP model run on pixels alone: its image tower and projection
    (``get_image_features``; OpenCLIP: ``encode_image``)."""
    return model.encode_image(x) if _is_open_clip(model) else model.get_image_features(pixel_values=x)


def text_features(model: Any, input_ids: Any, attention_mask: Any = None) -> Any:
    """A CLIP model's text tower and projection on token ids (``get_text_features``;
    OpenCLIP: ``encode_text``, which finds each prompt's end token itself and takes no mask)."""
    if _is_open_clip(model):
        return model.encode_text(input_ids)
    kwargs = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    return model.get_text_features(**kwargs)


class Text(EmbeddingTarget):
    """The logits of an image against ``K`` prompts (see :func:`text`).

    Attributes:
        labels: each prompt, quoted and cut to 40 characters (``Explanation.class_names``).
        prompts: the prompts as given (``None`` when only token ids were).
        embeddings: ``(K, D)`` the prompts' unit-length text embeddings, computed once.
    """

    kind = "text"
    name = "text"

    def __init__(
        self,
        prompts: str | Sequence[str] | None,
        model: Any,
        tokenizer: Any = None,
        input_ids: Any = None,
        attention_mask: Any = None,
    ) -> None:
        import torch

        if not is_dual_encoder(model):
            raise UsageError(
                "text() explains the image–text similarity of a CLIP model (transformers' CLIPModel: "
                "get_image_features, get_text_features and logit_scale; or OpenCLIP's: encode_image, encode_text "
                f"and logit_scale); a {type(model).__name__} is not one"
            )
        self.prompts = _prompts(prompts) if prompts is not None else None
        if input_ids is None:
            if self.prompts is None:
                raise UsageError("text() needs the prompts, or their token ids as input_ids=")
            input_ids, attention_mask = _tokenize(self.prompts, model, tokenizer)
        ids = torch.as_tensor(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.is_floating_point() or ids.shape[1] == 0:
            raise UsageError(f"input_ids must be whole-number token ids (K, L), not {tuple(ids.shape)} {ids.dtype}")
        if self.prompts is not None and len(self.prompts) != ids.shape[0]:
            raise UsageError(f"{len(self.prompts)} prompts but {int(ids.shape[0])} rows of input_ids")
        device = model_device(model)
        mask = None if attention_mask is None else torch.as_tensor(attention_mask).reshape(ids.shape).to(device)
        with inference(model):
            self.embeddings = normalised(embedding_of(text_features(model, ids.to(device), mask), "text()")).detach()
        labels = [quoted(p) for p in self.prompts] if self.prompts else [f"tokens {i}" for i in range(len(ids))]
        super().__init__(model, labels)

    def similarities(self, model: Any, x: Any) -> Any:
        """``logit_scale.exp() · cos(image, prompt)`` (``+ logit_bias`` for SigLIP), ``(N, K)``:
        the model's own ``logits_per_image``."""
        image = normalised(embedding_of(image_features(model, x), "text()"))
        text = self.embeddings.to(image.device)
        logits = (image @ text.T) * model.logit_scale.exp().float()
        bias = getattr(model, "logit_bias", None)
        return logits + bias.float() if bias is not None else logits


def text(
    prompts: str | Sequence[str] | None = None,
    *,
    model: Any,
    tokenizer: Any = None,
    input_ids: Any = None,
    attention_mask: Any = None,
) -> Text:
    """A CLIP target: how well each image matches a prompt, as the model scores it.

    The explained score of image ``n`` against prompt ``j`` is the model's own
    ``logits_per_image[n, j]``, ``logit_scale.exp() · cos(image_embed, text_embed)``. The
    text embeddings are computed once, without gradients, when the target is made; the image
    side runs through layerscope's capture (``get_image_features``: the vision tower and its
    projection), so one forward and one backward pass give every layer's map::

        from layerscope.targets import text

        exp = layerscope.explain(clip, "cat.jpg", target=text("a photo of a cat", model=clip))
        exps = layerscope.explain_many(clip, "cat.jpg", targets=text(["a cat", "a dog"], model=clip))

    Several prompts are several targets: :func:`layerscope.explain_many` gives one
    explanation per prompt from one batched pass; :func:`layerscope.explain` takes one prompt
    for every image or one per image.

    Args:
        prompts: a prompt or a list of them (each non-empty).
        model: the CLIP model explained: transformers' ``CLIPModel`` (or any model with
            ``get_image_features``, ``get_text_features`` and ``logit_scale``), or an
            OpenCLIP model (``encode_image``, ``encode_text``, ``logit_scale``;
            ``open_clip.create_model(...)``).
        tokenizer: the model's tokenizer or processor (``CLIPTokenizer``,
            ``CLIPProcessor``; OpenCLIP: ``open_clip.get_tokenizer(name)``); default: the
            one of the folder the model was loaded from (``layerscope.load_model("hf:/folder")``).
        input_ids: ``(K, L)`` token ids instead of tokenising the prompts (``prompts`` then
            only name them).
        attention_mask: ``(K, L)`` with ``input_ids``.

    Returns:
        The target for ``explain(..., target=...)``: ``Explanation.targets`` is the prompt's
        index, ``class_names`` the prompts (quoted), ``scores`` the logits and
        ``probabilities`` the softmax over the prompts (CLIP's zero-shot probability).
    """
    return Text(prompts, model, tokenizer, input_ids, attention_mask)


def _prompts(prompts: str | Sequence[str]) -> list[str]:
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise UsageError("text(): no prompt given")
    for p in items:
        if not isinstance(p, str):
            raise UsageError(f"text(): a prompt is a string, not a {type(p).__name__}")
        if not p.strip():
            raise UsageError("text(): a prompt is empty; give the words to explain")
    return items


def _tokenize(prompts: list[str], model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` of the prompts, padded and cut to the text tower's length."""
    tok = tokenizer if tokenizer is not None else info_for(model).tokenizer
    if tok is None:
        raise UsageError(
            "text() needs the model's tokenizer: pass tokenizer= (or the processor), pass input_ids=, or load the "
            "model with layerscope.load_model('hf:/folder') from a folder that holds the tokenizer's files"
        )
    if _is_open_clip(model):  # OpenCLIP's tokenizers: prompts → (K, context length) ids, zero-padded
        ids = tok(prompts)
        if not hasattr(ids, "shape") or len(ids.shape) != 2:
            raise UsageError(
                f"text(): the tokenizer returned a {type(ids).__name__}, not (K, L) token ids; for an OpenCLIP "
                "model pass tokenizer=open_clip.get_tokenizer(name)"
            )
        return ids, None
    tok = getattr(tok, "tokenizer", tok)  # a processor holds its tokenizer
    length = getattr(getattr(getattr(model, "config", None), "text_config", None), "max_position_embeddings", None)
    kwargs = {"max_length": int(length)} if length else {}
    enc = tok(prompts, padding=True, truncation=True, return_tensors="pt", **kwargs)
    return enc["input_ids"], enc.get("attention_mask") if hasattr(enc, "get") else None
