"""Progress of long runs on stderr: done / total, rate, ETA and throttles seen.

Shown only when stderr is a terminal (a person is watching); in CI and pipes it stays silent,
so logs carry nothing but results. Thread-safe: workers call :meth:`Progress.step` as they
finish. Counts and rates only, never an id or a value.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO


class Progress:
    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 enabled: bool | None = None, throttles: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 0.5):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._throttles = throttles
        self._clock = clock
        self._start = clock()
        self._last = 0.0
        self._min_interval = min_interval
        self._done = 0
        self._lock = threading.Lock()

    @property
    def done(self) -> int:
        return self._done

    def line(self) -> str:
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = self._done / elapsed
        left = self.total - self._done
        eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
        text = (f"{self.label}: {self._done}/{self.total} image sets, {rate:.2f}/s, "
                f"ETA {eta}")
        if self._throttles is not None and self._throttles():
            text += f", {self._throttles()} throttled"
        return text

    def step(self, count: int = 1) -> None:
        with self._lock:
            self._done += count
            if not self.enabled:
                return
            now = self._clock()
            if now - self._last < self._min_interval and self._done < self.total:
                return
            self._last = now
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
