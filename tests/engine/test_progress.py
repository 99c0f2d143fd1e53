"""Progress on stderr: counts, rate, ETA and throttles when a person watches; silent otherwise."""

import io

from reconciler.documents.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_line_counts_rate_eta_and_throttles():
    clock, stream = Clock(), io.StringIO()
    progress = Progress("apply", 10, stream=stream, enabled=True, throttles=lambda: 2,
                        clock=clock, min_interval=0)
    clock.now = 4.0
    progress.step(2)
    assert progress.line() == "apply: 2/10 image sets, 0.50/s, ETA 16s, 2 throttled"
    assert stream.getvalue().endswith("apply: 2/10 image sets, 0.50/s, ETA 16s, 2 throttled")
    progress.close()


def test_progress_is_silent_when_not_a_terminal():
    stream = io.StringIO()  # not a tty
    progress = Progress("plan", 3, stream=stream)
    for _ in range(3):
        progress.step()
    progress.close()
    assert progress.done == 3
    assert stream.getvalue() == ""
