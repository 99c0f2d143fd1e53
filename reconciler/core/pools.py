"""Running many calls on a thread pool without submitting them all at once.

``ThreadPoolExecutor.map`` submits every item before the first result is taken: at 100,000
image sets, a future, a work item and a condition each (~1 KB) live until the end of the run.
:func:`bounded_map` keeps a window of them ahead, in order.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(pool: Executor, tasks: Iterable[tuple[Callable[[Any], Any], Any]],
                window: int) -> Iterator[tuple[Callable[[Any], Any], Any]]:
    """``(fn, fn(arg))`` for each ``(fn, arg)`` of ``tasks``, in order, run on ``pool`` with at
    most ``window`` submitted and not yet taken. A task's exception is raised where its result
    is taken; nothing more is submitted after it (those already submitted still run)."""
    pending: deque[tuple[Callable[[Any], Any], Future[Any]]] = deque()
    for fn, arg in tasks:
        pending.append((fn, pool.submit(fn, arg)))
        if len(pending) >= window:
            fn_, future = pending.popleft()
            yield fn_, future.result()
    while pending:
        fn_, future = pending.popleft()
        yield fn_, future.result()


def bounded(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``pool.map(fn, items)``, with at most ``window`` calls submitted ahead."""
    for _, result in bounded_map(pool, ((fn, item) for item in items), window):
        yield result
