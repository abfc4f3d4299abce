"""Progress of a run: a tqdm bar on a terminal, a log line every N items otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("layerscope.batch")

#: ``progress=`` values.
MODES = ("auto", "bar", "log", "none")


def plural(n: int, word: str) -> str:
    """``1 error``, ``0 errors``, ``2 errors``: the plural only when ``n`` is not 1."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Progress:
    """Counts items as they are explained; ``mode``: ``auto`` (a bar when stderr is a
    terminal, else log lines), ``bar``, ``log`` or ``none``."""

    def __init__(self, total: int, mode: str = "auto", every: int = 500, desc: str = "layerscope batch") -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.every, self.total = mode, max(1, int(every)), total
        self.count = 0
        self.errors = 0
        self._next = self.every
        self._t0 = time.monotonic()
        self._bar: Any = None
        if mode == "bar" and total:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.mode = "log"
            else:
                self._bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int, errors: int = 0) -> None:
        """``n`` more items handled (``errors`` of them failed)."""
        self.count += n
        self.errors += errors
        if self._bar is not None:
            self._bar.update(n)
            if errors:
                self._bar.set_postfix(errors=self.errors)
        elif self.mode == "log" and self.count >= self._next:
            while self._next <= self.count:
                self._next += self.every
            rate = self.count / max(time.monotonic() - self._t0, 1e-9)
            eta = (self.total - self.count) / rate if rate > 0 else float("inf")
            log.info(
                "%d/%s (%.1f items/s, %s, about %.0f s left)",
                self.count,
                plural(self.total, "item"),
                rate,
                plural(self.errors, "error"),
                eta,
            )

    def close(self) -> None:
        """End the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
