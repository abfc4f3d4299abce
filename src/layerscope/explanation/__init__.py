"""``explain(...)`` → :class:`Explanation`: capture → method → result. No math, no drawing.

:mod:`~layerscope.explanation.run` holds :func:`explain` (the capture and the method,
turned into a result); :mod:`~layerscope.explanation.result` the :class:`Explanation` itself.
"""

from __future__ import annotations

from layerscope.explanation.result import Explanation, FusedMap
from layerscope.explanation.run import explain, resolve_target

__all__ = ["Explanation", "FusedMap", "explain", "resolve_target"]
