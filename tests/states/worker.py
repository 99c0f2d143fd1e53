"""A separate process that uses a state backend, for the race and crash tests.

Run as ``python worker.py MODE CONFIG_JSON [ARGS...]``; CONFIG_JSON is what
:func:`reconciler.states.open_backend` takes. Lines on stdout report progress (flushed at once):

* ``count N TIMEOUT`` — N times: lock, read, add one to the counter record, write, unlock;
* ``hold`` — lock, print ``LOCKED <lock id>``, then sleep until killed or stdin closes;
* ``race GO_FILE`` — print ``READY``, wait for GO_FILE, try the lock once (timeout 0):
  ``WON`` (then hold it until stdin closes) or ``LOST <message>``;
* ``crash-before-rename`` — read, put a record, and die by SIGKILL between the temp file's
  fsync and the rename.
* ``crash-mid-append`` — (a local state that journals) read, put a record, and die by SIGKILL
  once half of its journal line is written.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from reconciler.core.errors import LockError
from reconciler.states import ImageSetRecord, State, files, open_backend

COUNTER_SPEC = "counter"
COUNTER_ID = "c" * 32


def record(count: int) -> ImageSetRecord:
    return ImageSetRecord(datastore_id="d" * 32, image_set_id=COUNTER_ID, version_before=str(count - 1),
                          version_after=str(count), spec_digest="0" * 64)


def increment(backend) -> int:
    state = backend.read() or State.new()
    current = state.get(COUNTER_SPEC, COUNTER_ID)
    count = int(current.version_after) + 1 if current else 1
    state.put(COUNTER_SPEC, record(count))
    backend.write(state)
    return count


def main(argv: list[str]) -> int:
    mode, config = argv[0], json.loads(argv[1])
    backend = open_backend(config, Path.cwd())
    backend.poll_interval, backend.max_poll_interval = 0.01, 0.05
    say = lambda text: print(text, flush=True)  # noqa: E731
    if mode == "count":
        times, timeout = int(argv[2]), float(argv[3])
        for _ in range(times):
            with backend.lock("count", timeout=timeout):
                increment(backend)
        say("DONE")
    elif mode == "hold":
        with backend.lock("hold", timeout=5) as info:
            say(f"LOCKED {info.id}")
            sys.stdin.read()            # until the parent closes stdin (or kills us)
    elif mode == "race":
        go = Path(argv[2])
        say("READY")
        while not go.exists():
            time.sleep(0.002)
        try:
            with backend.lock("race", timeout=0):
                say("WON")
                sys.stdin.read()
        except LockError as exc:
            say(f"LOST {exc}")
    elif mode == "crash-before-rename":
        real_rename = files._rename

        def crash(src, dst):            # the backup is written first: let that one through
            if Path(dst) == backend.path:
                os.kill(os.getpid(), signal.SIGKILL)
            real_rename(src, dst)
        files._rename = crash
        increment(backend)
        say("NOT REACHED")
    elif mode == "crash-mid-append":
        from reconciler.states import local

        backend.journal_min_bytes = 0

        def torn(fd, data):
            os.write(fd, bytes(data[:len(data) // 2]))
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        local._write = torn
        increment(backend)
        say("NOT REACHED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
