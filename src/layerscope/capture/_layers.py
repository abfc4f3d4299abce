"""Layer specs (names, glob patterns, lists) matched against a model's layer names, and the
grids a layer's tokens can form (:func:`token_grids`); shared by the adapters."""

from __future__ import annotations

from layerscope.errors import UsageError, unknown_name

#: The most extra tokens (CLS, distillation, registers) in front of a grid of patch tokens
#: when the model's patch size is known (a patch-embedding convolution), and when it is not.
MAX_EXTRA_TOKENS = 8
MAX_EXTRA_TOKENS_UNKNOWN_PATCH = 2


def token_grids(hw: tuple[int, int], tokens: int, patch: int | None) -> list[tuple[int, tuple[int, int]]]:
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


def token_grid(
    tokens: int, hw: tuple[int, int], patch: int | None, prefix: int | None = None
) -> tuple[int, tuple[int, int]] | None:
    """``(extra tokens, (h, w))`` of ``tokens`` tokens for an ``hw`` input, as the adapters lay
    them out: first ``prefix`` extra tokens when the model declares how many come before its
    patches (timm's ``num_prefix_tokens``: class, distillation and register tokens), at any
    stride; then fewest extra tokens first, a known patch size first, then any stride;
    ``None``: no grid."""
    if prefix is not None and 0 <= prefix < tokens:
        exact = [g for e, g in token_grids(hw, tokens - prefix, None) if e == 0]
        if exact:
            return prefix, exact[0]
    grids = token_grids(hw, tokens, patch) or (token_grids(hw, tokens, None) if patch is not None else [])
    return grids[0] if grids else None


def match_layers(
    specs: str | list[str] | tuple[str, ...] | None,
    names: dict[str, str],
    default: list[str],
) -> list[tuple[str, str]]:
    """Resolve layer specs against the known names; shared by the adapters.

    Args:
        specs: ``None`` (the default layers), one name or glob pattern, a comma-separated
            string of them, or a list.
        names: every addressable name (friendly names first) → framework path.
        default: the display names chosen when ``specs`` is ``None``.

    Returns:
        ``(display name, path)`` pairs, without duplicates, in the order found.
    """
    import fnmatch

    if specs is None:
        return [(n, names[n]) for n in default]
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    if not specs:
        raise UsageError("no layer given: pass layer names, glob patterns, or nothing for every conv layer")
    chosen: dict[str, str] = {}
    for spec in specs:
        if spec in names:
            found = [spec]
        elif any(ch in spec for ch in "*?["):
            found = fnmatch.filter(names, spec)
            if not found:
                raise UsageError(f"layer pattern {spec!r} matches no layer; {_listing(default or list(names))}")
        else:
            raise UsageError(
                unknown_name("layer", spec, names, cutoff=0.6, n=5, valid="", also=" (`layerscope layers` lists them)")
            )
        for n in found:
            chosen.setdefault(n, names[n])
    return list(chosen.items())


def _listing(layers: list[str], most: int = 16) -> str:
    """``"the layers: a, b, … (N in all; `layerscope layers` lists them)"``, shortened."""
    shown = layers if len(layers) <= most else [*layers[: most // 2], "…", *layers[-most // 2 :]]
    return f"the layers: {', '.join(shown)} ({len(layers)} in all; `layerscope layers` lists them)"
