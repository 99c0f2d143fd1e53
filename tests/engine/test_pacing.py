"""The client-side pacer: per-operation token buckets at the published quotas, configurable,
and slowed down by throttling (multiplicative decrease, additive recovery)."""

import threading

from reconciler.pacing import Pacer


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += seconds


def _pacer(t, **kw):
    return Pacer(clock=t.clock, sleep=t.sleep, **kw)


def test_update_metadata_is_paced_to_the_published_quota():
    t = FakeTime()
    pacer = _pacer(t)
    for _ in range(5):
        pacer.acquire("UpdateImageSetMetadata")
    # burst 1, then one token every 4 s (0.25 TPS)
    assert t.now == 16.0


def test_reads_have_their_own_larger_bucket():
    t = FakeTime()
    pacer = _pacer(t)
    for _ in range(100):
        pacer.acquire("GetImageSetMetadata")   # burst 100
    assert t.now == 0.0
    pacer.acquire("GetImageSetMetadata")
    assert abs(t.now - 1 / 50) < 1e-9
    assert pacer.acquire("UpdateImageSetMetadata") == 0.0  # another operation, another bucket


def test_configured_rates_override_the_defaults():
    t = FakeTime()
    pacer = _pacer(t, rates={"UpdateImageSetMetadata": 10})
    for _ in range(11):
        pacer.acquire("UpdateImageSetMetadata")
    assert abs(t.now - 1.0) < 1e-9
    assert pacer.rate("UpdateImageSetMetadata") == 10


def test_throttling_halves_the_rate_and_calm_restores_it():
    t = FakeTime()
    pacer = _pacer(t, rates={"GetImageSet": 8})
    pacer.acquire("GetImageSet")
    pacer.throttled("GetImageSet")
    assert pacer.rate("GetImageSet") == 4
    pacer.throttled("GetImageSet")
    assert pacer.rate("GetImageSet") == 2
    assert pacer.throttle_count() == 2
    t.now += 60
    pacer.acquire("GetImageSet")
    assert pacer.rate("GetImageSet") == 8


def test_disabled_pacer_never_waits_and_unknown_operations_are_free():
    t = FakeTime()
    off = _pacer(t, enabled=False)
    for _ in range(10):
        off.acquire("UpdateImageSetMetadata")
    assert t.slept == 0
    assert _pacer(t).acquire("NoSuchOperation") == 0.0


def test_threads_share_one_bucket():
    pacer = Pacer(rates={"UpdateImageSetMetadata": 200})
    import time
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: [pacer.acquire("UpdateImageSetMetadata")
                                                for _ in range(10)]) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 40 acquisitions at 200/s with burst 1 need at least ~0.195 s, whatever the threads
    assert time.monotonic() - start >= 39 / 200 * 0.95
