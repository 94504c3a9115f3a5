"""Plain-text output of the command line: tables and a progress bar (one of each, for every command)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["Progress", "table"]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, under a header and a rule of dashes."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[object]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


class Progress:
    """``[#####.....] done/total  elapsed  what`` on one line of ``stream``, redrawn as it moves."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30, enabled: bool = True):
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self._drawn = -1

    def advance(self, what: str = "", by: int = 1) -> None:
        self.update(self.done + by, what)

    def update(self, done: int, what: str = "") -> None:
        self.done = done
        if not self.enabled:
            return
        filled = self.width * done // max(self.total, 1)
        if filled == self._drawn and done != self.total and not what:
            return  # nothing visible changed
        self._drawn = filled
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r[{bar}] {done}/{self.total} {elapsed:5.0f} s  {what:<40}".rstrip() + " ")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
