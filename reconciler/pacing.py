"""Client-side pacing: one token bucket per HealthImaging operation, shared by all threads.

HealthImaging's quotas are per account (UpdateImageSetMetadata 0.25 TPS, burst 1). Pacing on
the client keeps throttling the exception: a request waits for a token instead of being
refused. When the service throttles anyway (another client shares the account), the bucket
halves its rate and recovers additively (AIMD), the way TCP and botocore's adaptive mode react
to congestion.

botocore's ``adaptive`` retry mode does client-side rate limiting too, but it learns one rate
per client from throttling responses; it cannot be told the published per-operation quotas,
which is what lets us spend every update the account is allowed from the first request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from . import facts


@dataclass
class _Bucket:
    rate: float          # tokens per second now
    ceiling: float       # configured rate; recovery never goes above it
    burst: float
    tokens: float
    stamp: float
    throttles: int = 0


class Pacer:
    """Blocks callers so that each operation stays under its rate.

    ``rates`` maps an operation name to requests per second; ``bursts`` optionally to a burst.
    Operations not named use the published quota (:func:`reconciler.facts.quotas`); with
    ``enabled=False`` nothing waits (still counting throttles for the report).
    """

    def __init__(self, rates: Mapping[str, float] | None = None,
                 bursts: Mapping[str, float] | None = None, *, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._rates = dict(rates or {})
        self._bursts = dict(bursts or {})
        self._enabled = enabled
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, op: str) -> _Bucket | None:
        bucket = self._buckets.get(op)
        if bucket is None:
            published = facts.quotas().get(op)
            rate = self._rates.get(op, published["rate"] if published else None)
            if rate is None or rate <= 0:
                return None
            burst = self._bursts.get(op)
            if burst is None:
                # A raised rate keeps the published burst: how a raised quota's burst grows is
                # not documented, and a smaller burst only costs a little latency.
                burst = published["burst"] if published else 1.0
            bucket = _Bucket(rate=rate, ceiling=rate, burst=burst, tokens=burst, stamp=self._clock())
            self._buckets[op] = bucket
        return bucket

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(bucket.burst, bucket.tokens + elapsed * bucket.rate)
        if bucket.rate < bucket.ceiling:
            # Additive recovery: back to the ceiling over about ten seconds of calm.
            bucket.rate = min(bucket.ceiling, bucket.rate + elapsed * bucket.ceiling / 10.0)
        bucket.stamp = now

    def acquire(self, op: str) -> float:
        """Take one token for ``op``, sleeping as needed. Returns the seconds waited."""
        if not self._enabled:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                bucket = self._bucket(op)
                if bucket is None:
                    return waited
                now = self._clock()
                self._refill(bucket, now)
                # A hair under one token is one token: refills are float sums, and waiting for
                # the last 1e-16 would spin on a clock too coarse to move.
                if bucket.tokens >= 1.0 - 1e-9:
                    bucket.tokens = max(0.0, bucket.tokens - 1.0)
                    return waited
                delay = (1.0 - bucket.tokens) / bucket.rate
            self._sleep(delay)
            waited += delay

    def throttled(self, op: str) -> None:
        """The service throttled ``op``: halve its rate (multiplicative decrease)."""
        with self._lock:
            bucket = self._bucket(op)
            if bucket is None:
                return
            bucket.throttles += 1
            bucket.rate = max(bucket.ceiling / 16.0, bucket.rate / 2.0)
            bucket.tokens = min(bucket.tokens, 0.0)

    def rate(self, op: str) -> float | None:
        with self._lock:
            bucket = self._bucket(op)
            return bucket.rate if bucket else None

    def throttle_count(self) -> int:
        with self._lock:
            return sum(b.throttles for b in self._buckets.values())
