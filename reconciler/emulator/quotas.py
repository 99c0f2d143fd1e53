"""Per-operation throttling (``--quotas aws``): one token bucket per operation.

Rates and bursts are the published per-account limits from ``reconciler.data.service_facts.quotas()``;
``--time-scale F`` multiplies every rate by F, so a test can exercise 0.25 TPS pacing in a
fraction of the time. The burst of the three 0.25-TPS writes comes from the ``write_burst``
behaviour (1 on the English page, 10 on a translated revision). A call that finds its bucket
empty is answered 429 ThrottlingException and consumes nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from reconciler.data import service_facts

WRITE_OPERATIONS = ("UpdateImageSetMetadata", "CopyImageSet", "DeleteImageSet")


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Quotas:
    """``allow(operation)`` is False when the call must be throttled."""

    def __init__(self, mode: str = "off", time_scale: float = 1.0, write_burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in ("off", "aws"):
            raise ValueError(f"quotas must be 'off' or 'aws', not {mode!r}")
        self.mode = mode
        self.time_scale = time_scale
        self.write_burst = write_burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def limits(self, operation: str) -> tuple[float, float] | None:
        published = service_facts.quotas().get(operation)
        if published is None:
            return None
        burst = published["burst"]
        if operation in WRITE_OPERATIONS and self.write_burst is not None:
            burst = self.write_burst
        return published["rate"] * self.time_scale, burst

    def allow(self, operation: str) -> bool:
        if self.mode == "off":
            return True
        with self._lock:
            bucket = self._buckets.get(operation)
            if bucket is None:
                limits = self.limits(operation)
                if limits is None:
                    return True
                bucket = self._buckets[operation] = TokenBucket(*limits, self.clock)
            return bucket.take()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
