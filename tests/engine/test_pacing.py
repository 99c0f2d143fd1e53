"""The client-side pacer: per-operation token buckets at the published quotas, configurable,
and slowed down by throttling (multiplicative decrease, additive recovery)."""

import threading

import pytest

from reconciler.healthimaging.pacing import CONTENTION_SLOTS, DEFAULT_HEADROOM, REALIGN_SLOT, Pacer


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
    kw.setdefault("headroom", 0.0)
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


def test_an_isolated_throttle_costs_a_tenth_of_a_slot_and_keeps_the_rate():
    """A lone 429 is phase noise against the service's burst-1 bucket, whose token the refused
    request did not take: wait a tenth of a slot."""
    t = FakeTime()
    pacer = _pacer(t, rates={"GetImageSet": 8})
    pacer.acquire("GetImageSet")
    t.now += 1.0                    # calm: the bucket is full again
    pacer.throttled("GetImageSet")
    assert pacer.rate("GetImageSet") == 8
    before = t.now
    pacer.acquire("GetImageSet")    # realigned: the next request waits a tenth of a slot
    assert abs(t.now - before - REALIGN_SLOT / 8) < 1e-9
    assert pacer.throttle_count() == 1


def test_repeated_throttling_halves_the_rate_and_calm_restores_it():
    t = FakeTime()
    pacer = _pacer(t, rates={"GetImageSet": 8})

    def refused_again():
        pacer.acquire("GetImageSet")            # sent after the realignment ...
        pacer.throttled("GetImageSet")          # ... and refused again

    pacer.acquire("GetImageSet")
    pacer.throttled("GetImageSet")
    assert pacer.rate("GetImageSet") == 8       # the first one: noise
    refused_again()
    assert pacer.rate("GetImageSet") == 8       # one more: still possibly the service's timing
    refused_again()
    assert pacer.rate("GetImageSet") == 4       # a third in a row: contention
    refused_again()
    refused_again()
    assert pacer.rate("GetImageSet") < 2.5      # halved again (plus a little recovery)
    assert pacer.throttle_count() == 5
    t.now += 60
    pacer.acquire("GetImageSet")
    assert pacer.rate("GetImageSet") == 8


def test_a_429_of_a_request_already_in_flight_only_counts():
    """Requests sent before the bucket was realigned (a slow response) carry no news: they
    neither halve the rate nor push the schedule back again."""
    t = FakeTime()
    pacer = _pacer(t, rates={"GetImageSet": 8})
    sent, answered = threading.Event(), threading.Event()

    def in_flight():
        pacer.acquire("GetImageSet")   # another thread's request, sent before any 429 ...
        sent.set()
        answered.wait()
        pacer.throttled("GetImageSet")  # ... whose 429 arrives after ours

    other = threading.Thread(target=in_flight)
    pacer.acquire("GetImageSet")
    other.start()
    sent.wait()
    pacer.throttled("GetImageSet")    # our 429 realigns
    stamp = t.now
    answered.set()
    other.join()
    assert pacer.rate("GetImageSet") == 8
    assert pacer.throttle_count() == 2
    pacer.acquire("GetImageSet")
    assert abs(t.now - stamp - REALIGN_SLOT / 8) < 1e-9   # after the first realignment only


def test_throttles_further_apart_than_the_contention_window_never_halve():
    t = FakeTime()
    pacer = _pacer(t, rates={"GetImageSet": 10})
    for _ in range(5):
        pacer.throttled("GetImageSet")
        t.now += CONTENTION_SLOTS / 10 + 0.01
    assert pacer.rate("GetImageSet") == 10


def test_headroom_paces_a_little_under_the_quota():
    t = FakeTime()
    pacer = Pacer(clock=t.clock, sleep=t.sleep)          # the product's default headroom
    for _ in range(101):
        pacer.acquire("UpdateImageSetMetadata")
    assert abs(t.now - 100 * 4 / (1 - DEFAULT_HEADROOM)) < 1e-6
    t2 = FakeTime()
    raised = Pacer(rates={"UpdateImageSetMetadata": 10}, headroom=0.5, clock=t2.clock, sleep=t2.sleep)
    for _ in range(11):
        raised.acquire("UpdateImageSetMetadata")
    assert abs(t2.now - 2.0) < 1e-9
    with pytest.raises(ValueError):
        Pacer(headroom=1.0)


def test_disabled_pacer_never_waits_and_unknown_operations_are_free():
    t = FakeTime()
    off = _pacer(t, enabled=False)
    for _ in range(10):
        off.acquire("UpdateImageSetMetadata")
    assert t.slept == 0
    assert _pacer(t).acquire("NoSuchOperation") == 0.0


def test_threads_share_one_bucket():
    pacer = Pacer(rates={"UpdateImageSetMetadata": 200}, headroom=0.0)
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
