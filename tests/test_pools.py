"""core.pools.bounded_map: results in order, at most ``window`` tasks submitted ahead."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.core.pools import bounded_map


def test_results_in_order_with_at_most_window_submitted_ahead():
    started: list[int] = []
    lock = threading.Lock()

    def double(i: int) -> int:
        with lock:
            started.append(i)
        return 2 * i

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = bounded_map(pool, ((double, i) for i in range(200)), window=5)
        first = next(results)
        assert first == (double, 0)
        assert len(started) <= 5            # 200 tasks, but only the window was submitted
        rest = list(results)
    assert [r for _, r in [first, *rest]] == [2 * i for i in range(200)]


def test_an_exception_is_raised_in_its_place_and_stops_submitting():
    ran: list[int] = []

    def task(i: int) -> int:
        ran.append(i)
        if i == 3:
            raise ValueError("task 3")
        return i

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = bounded_map(pool, ((task, i) for i in range(100)), window=4)
        assert [r for _, r in (next(results) for _ in range(3))] == [0, 1, 2]
        with pytest.raises(ValueError, match="task 3"):
            next(results)
    assert max(ran) < 3 + 4 + 1                # nothing submitted past the window after it


def test_bounded_is_map_in_order():
    from reconciler.core.pools import bounded

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(bounded(pool, str, range(50), window=2)) == [str(i) for i in range(50)]
