"""Kept for old imports: the metrics live in :mod:`layerscope.evaluate` now."""

from __future__ import annotations

from layerscope.evaluate.localisation import pointing_game, upsample_bilinear
from layerscope.evaluate.sanity import rank_correlation

__all__ = ["pointing_game", "rank_correlation", "upsample_bilinear"]
