"""A clock for the emulators the tests start, shared by the test packages (``tests/`` is on
``sys.path`` through its conftest): this machine's time plus a shift the test moves forward.

Under a lagging search index (the ``search_index_lag`` reading, tests/matrix/readings.py) a
completed version shows in SearchImageSets only some seconds later. A test whose point is the
steady state (what a check costs once nothing is in flight, a scheduled drift hours after an
edit) lets the index catch up with :func:`catch_up_index` instead of sleeping."""

from __future__ import annotations

import threading
import time

from matrix import readings


class Clock:
    """This machine's time plus a shift the test moves forward (``ThreadedEmulator(clock=)``)."""

    def __init__(self, shift: float = 0.0):
        self.shift = shift
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self.shift

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.shift += seconds


def catch_up_index(clock) -> None:
    """Move the emulator's clock past the session reading's search index lag: from then on
    SearchImageSets lists every version completed so far, as it does once the lag has passed.
    Nothing to do without a lag (the defaults)."""
    lag = readings.current().behaviour("search_index_lag")
    if lag:
        clock.advance(lag)
