"""The local state lock: a lock file that says who holds it, and a kernel lock that says
whether the holder is still alive.

A lock file alone cannot tell a running ``apply`` from one that was SIGKILLed (or lost its
machine) and left the file behind; a kernel lock alone cannot tell a waiting user who holds
it. So both:

* **Create** — ``open(O_CREAT | O_EXCL)`` of ``state.json.lock``: exactly one process
  creates it. The creator takes ``fcntl.flock(LOCK_EX)`` on it at once, then writes its
  :class:`LockInfo` as JSON, and keeps the descriptor open for as long as it holds the lock.
* **Busy or stale** — whoever finds the file already there opens it and tries
  ``flock(LOCK_EX | LOCK_NB)``. If that fails, the holder is alive: its JSON names it.
  If it succeeds, the process that created the file no longer has it open, i.e. it is dead
  (the kernel drops an flock when the last descriptor closes, however the process ended), and
  the file is **stale**: the newcomer, now holding the flock on that very file, rewrites it
  with its own JSON and holds the lock. Two newcomers cannot both do this: the flock is
  exclusive, and before taking over each checks that the path still names the file it
  locked (a holder releasing the lock unlinks the file *before* closing it).
* **The creation window** — between the creator's O_EXCL and its flock (microseconds) a
  newcomer can get the flock on an empty file. An empty or unreadable file whose flock is
  free counts as *being created*, not stale, until it is ``CREATION_GRACE`` seconds old;
  the creator retries its flock for that long.
* **Release** — unlink the file (only if the path still names our file), then close.
* **Force** — ``unlock --force`` just unlinks the file. A live holder keeps its flock on the
  unlinked file, notices at release that the path is no longer its file, and leaves the
  new one alone.

flock needs a local filesystem (or NFS with working locks) and all parties on one kernel —
containers sharing a bind mount qualify. Descriptors are opened O_CLOEXEC, so a subprocess
does not inherit (and keep alive) the lock; a bare ``fork()`` without exec would.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from .backend import LockInfo
from .files import ensure_dir

CREATION_GRACE = 5.0       # seconds an empty lock file counts as "being created"
_FLOCK_RETRY = 0.005


class LockFile:
    """One lock file; an instance holds at most one lock at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._held: LockInfo | None = None

    @property
    def held(self) -> LockInfo | None:
        return self._held

    # -- acquiring -------------------------------------------------------------------------
    def try_acquire(self, info: LockInfo) -> tuple[bool, LockInfo | None]:
        """One attempt; (True, None) when we hold the lock as ``info``, else (False, holder)."""
        if self._held is not None:
            return False, self._held        # one lock per handle: not re-entrant
        ensure_dir(self.path.parent)
        for _ in range(10):                  # a few rounds for races with a releasing holder
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                outcome = self._probe(info)
                if outcome is None:
                    continue                 # the file went away under us: try creating again
                return outcome
            try:
                self._adopt_new(fd, info)
            except BaseException:
                self.path.unlink(missing_ok=True)    # ours, and not a lock yet
                os.close(fd)
                raise
            return True, None
        return False, None

    def _adopt_new(self, fd: int, info: LockInfo) -> None:
        # A prober may hold the flock for a moment in the creation window; it lets go at once.
        deadline = time.monotonic() + CREATION_GRACE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(errno.EAGAIN, f"could not lock the lock file {self.path}") from None
                time.sleep(_FLOCK_RETRY)
        self._write(fd, info)

    def _probe(self, info: LockInfo) -> tuple[bool, LockInfo | None] | None:
        """The file exists: busy (False, holder), taken over as stale (True, None), or None
        when the path changed while we looked (retry)."""
        fd = self._open_existing()
        if fd is None:
            return None
        taken = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False, LockInfo.from_json(_read_fd(fd))
            # We hold the flock: nobody alive holds this file. Is it still the file at the
            # path, and a finished lock (not one whose creator is between O_EXCL and flock)?
            if not self._still_at_path(fd):
                return None
            if LockInfo.from_json(_read_fd(fd)) is None and self._age(fd) < CREATION_GRACE:
                return False, None
            self._write(fd, info)            # take the stale lock over
            taken = True
            return True, None
        finally:
            if not taken:
                os.close(fd)

    def _open_existing(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _still_at_path(self, fd: int) -> bool:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)

    @staticmethod
    def _age(fd: int) -> float:
        return time.time() - os.fstat(fd).st_mtime

    def _write(self, fd: int, info: LockInfo) -> None:
        data = info.to_json().encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd, self._held = fd, info

    def wait_for_holder(self, within: float) -> LockInfo | None:
        """The holder, once a lock caught in its creation window has been written (used to
        name the holder in an error; None if it does not appear within ``within`` seconds)."""
        deadline = time.monotonic() + within
        while True:
            try:
                holder = LockInfo.from_json(self.path.read_bytes())
            except FileNotFoundError:
                return None
            if holder is not None or time.monotonic() > deadline:
                return holder
            time.sleep(_FLOCK_RETRY)

    # -- releasing -------------------------------------------------------------------------
    def release(self) -> bool:
        """Let go of our lock; False when it had been broken (the path is not our file)."""
        fd, self._fd, self._held = self._fd, None, None
        if fd is None:
            return False
        try:
            ours = self._still_at_path(fd)
            if ours:
                self.path.unlink(missing_ok=True)   # unlink before close: see the module doc
            return ours
        finally:
            os.close(fd)

    def read(self) -> tuple[bool, LockInfo | None] | None:
        """None when there is no lock file; else (alive, holder): ``alive`` False when the
        holder is gone (the lock is stale and the next acquirer takes it over)."""
        fd = self._open_existing()
        if fd is None:
            return None
        try:
            holder = LockInfo.from_json(_read_fd(fd))
            if self._held is not None and holder is not None and holder.id == self._held.id:
                return True, holder
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True, holder
            fcntl.flock(fd, fcntl.LOCK_UN)
            young = holder is None and self._age(fd) < CREATION_GRACE
            return young, holder
        finally:
            os.close(fd)

    def break_lock(self, force: bool, lock_id: str | None) -> tuple[bool, LockInfo | None] | None:
        """Remove the lock file: ours, or stale, or (``force``) anyone's; ``lock_id`` limits
        it to that lock. None when there was no lock, else (removed, holder)."""
        if self._held is not None and lock_id in (None, self._held.id):
            holder = self._held
            self.release()
            return True, holder
        fd = self._open_existing()
        if fd is None:
            return None
        try:
            holder = LockInfo.from_json(_read_fd(fd))
            if lock_id is not None and (holder is None or holder.id != lock_id):
                return False, holder
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alive = holder is None and self._age(fd) < CREATION_GRACE
            except BlockingIOError:
                alive = True
            if alive and not force:
                return False, holder
            # Unlink only the file we looked at; holding its flock (when it was stale) keeps
            # an acquirer from taking it over between our look and the unlink.
            if not self._still_at_path(fd):
                return False, holder
            self.path.unlink(missing_ok=True)
            return True, holder
        finally:
            os.close(fd)


def _read_fd(fd: int) -> bytes:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
