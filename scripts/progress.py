"""A progress bar on stderr for the transfer commands (``scripts.put``, ``scripts.get``).

Redrawn in place at most ten times a second on a terminal; when stderr is not a terminal
(a log file, a test), one line per 10% instead, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_MIB = 1024 * 1024


class ProgressBar:
    def __init__(self, total: int, label: str, start: int = 0, stream: TextIO | None = None):
        self.total = max(total, 0)
        self.label = label
        self.done = start
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._began = time.monotonic()
        self._start = start
        self._drawn = 0.0
        self._step = -1

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self._tty:
            if now - self._drawn >= 0.1 or done >= self.total:
                self._drawn = now
                self._stream.write("\r" + self._line(now))
                self._stream.flush()
        else:
            step = 10 * done // self.total if self.total else 10
            if step != self._step:
                self._step = step
                self._stream.write(self._line(now) + "\n")
                self._stream.flush()

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        self.update(self.done)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _line(self, now: float) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(_WIDTH * fraction)
        rate = (self.done - self._start) / max(now - self._began, 1e-6) / _MIB
        return (f"{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {100 * fraction:5.1f}% "
                f"{self.done / _MIB:.1f}/{self.total / _MIB:.1f} MiB {rate:.1f} MiB/s")
