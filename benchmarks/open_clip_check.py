"""A real OpenCLIP model (``open_clip.create_model("ViT-B-32", pretrained=None)``: random
weights, built offline) explained against prompts: the explained score equals OpenCLIP's own
logit (``logit_scale · cos``, from its ``forward``) and each vision block's Grad-CAM equals an
independent one (forward hooks on ``ln_1`` + ``torch.autograd.grad`` of that logit + the 7×7
token grid written here); gradrollout's maps are not flat.

OpenCLIP needs torchvision, which does not import beside this project's torch 2.13, so the
test suite checks a model laid out as OpenCLIP's (``tests/targets/test_open_clip_target.py``)
and this script checks the real one, in a venv with torch, torchvision and open_clip_torch::

    PYTHONPATH=src python benchmarks/open_clip_check.py [--model ViT-B-32]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import layerscope
from layerscope.targets import text

PROMPTS = ["a photo of a cat", "a diagram of a dog"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args()
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    tok = open_clip.get_tokenizer(args.model)
    size = model.visual.image_size
    side = size[0] if isinstance(size, (tuple, list)) else size
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    blocks = [f"visual.transformer.resblocks.{i}.ln_1" for i in range(len(model.visual.transformer.resblocks))]
    exps = layerscope.explain_many(model, x, targets=text(PROMPTS, model=model, tokenizer=tok))
    assert exps[0].layers == blocks, exps[0].layers
    worst_score, worst_map = 0.0, 0.0
    for j, exp in enumerate(exps):
        kept: dict[str, torch.Tensor] = {}

        def keep(m: object, i: object, o: torch.Tensor, b: str, kept: dict[str, torch.Tensor] = kept) -> None:
            kept[b] = o

        hooks = [model.get_submodule(b).register_forward_hook(lambda m, i, o, b=b: keep(m, i, o, b)) for b in blocks]
        try:
            image, txt, scale = model(x, tok(PROMPTS))[:3]
        finally:
            for h in hooks:
                h.remove()
        logit = scale * image[0] @ txt[j]
        worst_score = max(worst_score, abs(float(exp.scores[0]) - float(logit.detach())))
        grads = torch.autograd.grad(logit, [kept[b] for b in blocks])
        for b, g in zip(blocks, grads, strict=True):
            a, gg = kept[b].detach()[0, 1:], g[0, 1:]  # batch first; the class token dropped
            n = round(a.shape[0] ** 0.5)
            w = gg.reshape(n, n, -1).mean(dim=(0, 1))
            ref = torch.relu((a.reshape(n, n, -1) * w).sum(-1)).numpy()
            worst_map = max(worst_map, float(np.abs(exp.cams[b][0] - ref).max() / max(ref.max(), 1e-12)))
    roll = layerscope.explain(model, x, method="gradrollout", target=text(PROMPTS[0], model=model, tokenizer=tok))
    flat = [b for b in roll.layers if roll.flat[b].any()]
    print(f"open_clip {open_clip.__version__}, {args.model} (random), {len(blocks)} vision blocks, prompts {PROMPTS}")
    print(f"explained score vs OpenCLIP's own logit: max |difference| {worst_score:.2e}")
    print(f"Grad-CAM vs the independent one, every block and prompt: max |difference| / peak {worst_map:.2e}")
    print(f"gradrollout: {len(roll.layers)} blocks, flat at: {flat or 'none'}")
    ok = worst_score <= 1e-4 and worst_map <= 1e-4 and not flat
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
