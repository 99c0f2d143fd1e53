"""Client-side pacing: one token bucket per HealthImaging operation, shared by all threads.

HealthImaging's quotas are per account (UpdateImageSetMetadata 0.25 TPS, burst 1). Pacing on
the client keeps throttling the exception: a request waits for a token instead of being
refused. A token is taken for every HTTP attempt, botocore's own retries included, right
before it is sent (:mod:`reconciler.healthimaging.aws` hooks ``before-send``), so the spacing the service
sees is the spacing the pacer made.

The pacer aims a little under each rate (``headroom``, 3 % by default; ``quotaHeadroom`` in
``reconciler.yaml``). With a burst of 1 the service refuses any request that arrives even a
millisecond before its bucket refilled, and the time between our token and the service's
check is never exactly constant (network, thread scheduling). Measured against the emulator at
an 80 ms slot, pacing at 100 % drew a 429 every ~20 updates; at 97 %, none. At the real 4 s
slot, 3 % is 120 ms of margin.

When the service throttles anyway, two cases differ:

* an **isolated** 429 (none in the last ``CONTENTION_SLOTS`` slots) is phase noise: with a
  burst of 1, a request that arrives a millisecond early against the service's own bucket is
  refused, and a refused request takes no token from the service's bucket, which is then
  nearly full. The next request waits a tenth of a slot (``REALIGN_SLOT``) and the rate is
  kept: halving it for noise would throw away half of the updates the account is allowed for
  the next ten seconds, and waiting a whole slot most of one. 429s of requests that were
  already sent when that happened (a slow response) say nothing new and only count;
* **repeated** 429s — two more in a row, each of a request sent after the bucket was
  realigned, within ten slots of the one before — mean contention (another client shares the
  account, or the configured rate is above the real quota): the rate halves and recovers
  additively (AIMD), the way TCP and botocore's adaptive mode react to congestion. One more
  429 after a realignment is still noise: measured against the emulator, the service side's
  own timing varies by tens of milliseconds, so the request after a refused one can meet a
  bucket whose last token was taken late.

botocore's ``adaptive`` retry mode does client-side rate limiting too, but it learns one rate
per client from throttling responses; it cannot be told the published per-operation quotas,
which is what lets us spend every update the account is allowed from the first request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from ..data import service_facts

# 429s of one operation each less than CONTENTION_SLOTS slots (1 / rate) after the last, on
# requests sent after it, are contention once there are this many in a row after the first.
CONTENTION_SLOTS = 10.0
CONTENTION_STRIKES = 2
# After a 429 the next request waits this fraction of a slot: the refused one arrived a little
# early, so the service's bucket is nearly full again (its token was not taken).
REALIGN_SLOT = 0.1
# The fraction of every rate kept in reserve against timing noise (see above).
DEFAULT_HEADROOM = 0.03


@dataclass
class _Bucket:
    rate: float          # tokens per second now
    ceiling: float       # configured rate; recovery never goes above it
    burst: float
    tokens: float
    stamp: float
    throttles: int = 0
    last_throttle: float | None = None
    epoch: int = 0       # counts the throttles that realigned the bucket
    strikes: int = 0     # realigned throttles in a row, each within the window of the last


class Pacer:
    """Blocks callers so that each operation stays under its rate.

    ``rates`` maps an operation name to requests per second; ``bursts`` optionally to a burst.
    Operations not named use the published quota (:func:`reconciler.data.service_facts.quotas`); each is
    paced at ``1 - headroom`` of its rate. With ``enabled=False`` nothing waits (still counting
    throttles for the report).
    """

    def __init__(self, rates: Mapping[str, float] | None = None,
                 bursts: Mapping[str, float] | None = None, *, enabled: bool = True,
                 headroom: float = DEFAULT_HEADROOM,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not 0.0 <= headroom < 1.0:
            raise ValueError(f"headroom must be in [0, 1), not {headroom!r}")
        self._headroom = headroom
        self._rates = dict(rates or {})
        self._bursts = dict(bursts or {})
        self._enabled = enabled
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        # The epoch of the token this thread took last, per operation: an HTTP attempt's
        # send and its response are handled on one thread (botocore's before-send and
        # needs-retry), so a 429 can be told apart from one already in flight.
        self._taken = threading.local()

    def _bucket(self, op: str) -> _Bucket | None:
        bucket = self._buckets.get(op)
        if bucket is None:
            published = service_facts.quotas().get(op)
            rate = self._rates.get(op, published["rate"] if published else None)
            if rate is None or rate <= 0:
                return None
            burst = self._bursts.get(op)
            if burst is None:
                # A raised rate keeps the published burst: how a raised quota's burst grows is
                # not documented, and a smaller burst only costs a little latency.
                burst = published["burst"] if published else 1.0
            rate *= 1.0 - self._headroom
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
                    self._epochs()[op] = bucket.epoch
                    return waited
                delay = (1.0 - bucket.tokens) / bucket.rate
            self._sleep(delay)
            waited += delay

    def _epochs(self) -> dict[str, int]:
        epochs = getattr(self._taken, "epochs", None)
        if epochs is None:
            epochs = self._taken.epochs = {}
        return epochs

    def throttled(self, op: str) -> None:
        """The service throttled ``op`` (called on the thread that sent the request).

        A request sent before the last realignment was already on its way: it is counted and
        nothing else. Otherwise the bucket is realigned, so the next request waits a tenth of
        a slot (``REALIGN_SLOT``); and when this is the ``CONTENTION_STRIKES``-th such 429 in a row, each within
        ``CONTENTION_SLOTS`` slots of the one before, the rate also halves (the service
        keeps refusing what was sent after realigning: contention, not timing noise).
        """
        with self._lock:
            bucket = self._bucket(op)
            if bucket is None:
                return
            bucket.throttles += 1
            if self._epochs().get(op, bucket.epoch) < bucket.epoch:
                return
            now = self._clock()
            self._refill(bucket, now)
            if (bucket.last_throttle is not None
                    and now - bucket.last_throttle < CONTENTION_SLOTS / bucket.rate):
                bucket.strikes += 1
            else:
                bucket.strikes = 0
            if bucket.strikes >= CONTENTION_STRIKES:
                bucket.rate = max(bucket.ceiling / 16.0, bucket.rate / 2.0)
                bucket.strikes = 0
            bucket.last_throttle = now
            bucket.epoch += 1
            bucket.tokens = min(bucket.tokens, 1.0 - REALIGN_SLOT)

    def rate(self, op: str) -> float | None:
        with self._lock:
            bucket = self._bucket(op)
            return bucket.rate if bucket else None

    def throttle_count(self) -> int:
        with self._lock:
            return sum(b.throttles for b in self._buckets.values())
