"""A one-line progress display for long commands (a redrawn bar on a terminal, a line every
few seconds otherwise, so CI logs stay readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
PLAIN_INTERVAL_S = 5.0


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.is_terminal = stream.isatty()
        self._last_plain = 0.0

    def update(self, done: float, total: float | None, text: str) -> None:
        if self.is_terminal:
            if total:
                filled = int(BAR_WIDTH * min(done / total, 1.0))
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                line = f"\r[{bar}] {100 * min(done / total, 1.0):5.1f}%  {text}"
            else:
                line = f"\r{text}"
            self.stream.write(line + "\033[K")
            self.stream.flush()
        elif time.monotonic() - self._last_plain >= PLAIN_INTERVAL_S:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.is_terminal:
            self.stream.write("\n")
            self.stream.flush()
