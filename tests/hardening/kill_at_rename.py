"""Run the reconciler command line in this process, and SIGKILL this process at the Nth
atomic rename into one directory (the state's): just before it, or just after it.

No hook in product code: ``os.replace`` (and ``os.rename``, should a backend use it) are
wrapped *before* reconciler is imported, so whatever the state backend binds at import time
is the wrapper. Used by ``test_kill_during_state_write.py``::

    KILL_RENAME_DIR=/abs/.reconciler KILL_RENAME_AT=3 KILL_RENAME_WHEN=before \\
    KILL_RENAME_LOG=/abs/renames.log python kill_at_rename.py apply --auto-approve

Every rename into the directory that completes is appended to ``KILL_RENAME_LOG`` (and
fsynced) as one JSON line ``{"n", "dst", "sha256"}`` (the hash of the bytes renamed in), so
the test knows exactly what each file must hold after the kill. A rename never reached
(``before``) is logged with ``"done": false``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys

DIRECTORY = os.path.realpath(os.environ["KILL_RENAME_DIR"])
AT = int(os.environ["KILL_RENAME_AT"])
WHEN = os.environ["KILL_RENAME_WHEN"]
LOG = os.environ["KILL_RENAME_LOG"]
assert WHEN in ("before", "after"), WHEN

_real = {"replace": os.replace, "rename": os.rename}
_count = 0


def _log(entry: dict) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(name: str):
    real = _real[name]

    def wrapper(src, dst, *args, **kwargs):
        global _count
        target = os.path.realpath(os.fspath(dst))
        if os.path.dirname(target) != DIRECTORY:
            return real(src, dst, *args, **kwargs)
        _count += 1
        n = _count
        with open(src, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        entry = {"n": n, "dst": os.path.basename(target), "sha256": digest}
        if n == AT and WHEN == "before":
            _log(dict(entry, done=False))
            _die()
        result = real(src, dst, *args, **kwargs)
        _log(dict(entry, done=True))
        if n == AT and WHEN == "after":
            _die()
        return result

    return wrapper


os.replace = _wrap("replace")
os.rename = _wrap("rename")

if __name__ == "__main__":
    from reconciler.cli import main

    sys.exit(main(sys.argv[1:]))
