"""The state backend interface, the lock description, and the factory from config.

The engine persists state through this one small interface, as Terraform's ``statemgr``
does, so that a local file and an S3 object behave the same way and pass the same
conformance suite (``tests/states/test_conformance.py``). The contract every backend keeps:

* ``read()`` returns the stored :class:`State` or ``None`` when nothing was written yet.
* ``write(state)`` stores ``state`` as serial ``state.serial + 1`` — **the backend
  increments the serial**, and on success ``state.serial`` is the new one. It is atomic (a
  reader sees the old snapshot or the new one, never a mix) and refuses with
  :class:`StateConflictError` when the stored state is no longer the snapshot ``state`` was read
  (or last written) as: another run wrote since, or the stored state has another lineage.
  Nothing is overwritten then. On any failure the new snapshot is kept in an *errored* file
  (``StateError.errored_path``; Terraform's ``errored.tfstate``) so no record of an update
  that did land in HealthImaging is lost, and the message says how to put it in place.
  How it stores it is the backend's: the local one appends only the changed records to a
  journal and compacts it into a full snapshot at the end of the lock (:mod:`.local`).
* ``lock(operation, timeout)`` is a context manager held for a whole apply. It polls until
  ``timeout`` seconds have passed, then raises :class:`LockError` naming the holder (who,
  host, pid, operation, since, lock id). It is released on exit, also on an exception.
* ``unlock(force=False)`` removes a lock that is ours or known to be abandoned; ``force``
  removes whoever's it is (``reconciler state unlock --force``).

The lost-update guard and the lock are independent: the lock keeps runs from interleaving, the
guard makes an interleaving that happens anyway (a broken lock, a run without one) fail loudly
instead of silently dropping records.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from ..core.errors import LockError, StateConflictError, StateError
from .document import State, utc_now
from .files import save_errored
from .keys import KeySource

log = logging.getLogger(__name__)

DEFAULT_LOCAL_PATH = ".reconciler/state.json"
DEFAULT_S3_KEY = "reconciler/state.json"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):    # a container user without a passwd entry
        return f"uid{os.getuid()}"


@dataclass(frozen=True)
class LockInfo:
    """Who holds a state lock; stored in the lock file / lock object as JSON."""

    id: str
    operation: str
    who: str
    host: str
    pid: int
    since: str
    version: str
    location: str

    @classmethod
    def new(cls, operation: str, location: str) -> LockInfo:
        return cls(id=str(uuid.uuid4()), operation=operation, who=_user(), host=socket.gethostname(),
                   pid=os.getpid(), since=utc_now(), version=__version__, location=location)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> LockInfo | None:
        """The holder described by a lock, or None when it is empty or unreadable (a lock
        being created, or written by something else)."""
        try:
            doc = json.loads(text)
            return cls(**{name: doc[name] for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None

    def describe(self) -> str:
        return (f"{self.who}@{self.host} (pid {self.pid}) for {self.operation!r} since {self.since} "
                f"(lock id {self.id})")


def describe_holder(holder: LockInfo | None) -> str:
    return holder.describe() if holder else "an unknown holder (the lock is unreadable or being created)"


def unlock_refused(location: str, holder: LockInfo | None, lock_id: str | None) -> LockError:
    if lock_id is not None and (holder is None or holder.id != lock_id):
        return LockError(f"state {location} is locked by {describe_holder(holder)}, not by lock "
                         f"id {lock_id}; nothing was removed", held=True, holder=holder)
    return LockError(f"state {location} is locked by {describe_holder(holder)}, which may still "
                     f"be running; nothing was removed. If you are sure it is not: "
                     f"reconciler state unlock --force", held=True, holder=holder)


# -- the write contract, shared by the backends ------------------------------------------------
def check_expected(location: str, state: State, stored: tuple[str, int] | None) -> None:
    """The lost-update guard: the stored ``(lineage, serial)`` must be what ``state`` was read
    (or last written) as; a never-written state (serial 0) needs an empty location."""
    if stored is None:
        if state.serial != 0:
            raise StateConflictError(f"the state at {location} (serial {state.serial} when read) "
                                     f"has been deleted since")
        return
    lineage, serial = stored
    if state.serial == 0:
        raise StateConflictError(f"a state already exists at {location} (lineage {lineage}, serial "
                                 f"{serial}); read it instead of starting a new one")
    if lineage != state.lineage:
        raise StateConflictError(f"the state at {location} has lineage {lineage}, not {state.lineage}: "
                                 f"it is another state")
    if serial != state.serial:
        raise StateConflictError(f"the state at {location} was written by another run since this "
                                 f"one read it (stored serial {serial}, read as {state.serial})")


def write_failed(cause: StateError | str, snapshot: bytes | Callable[[], Iterable[str]],
                 new_serial: int, candidates: list[Path], recovery: str) -> StateError:
    """The error for a failed write, after keeping the snapshot (its bytes, or what makes its
    pieces: :meth:`~.document.Pending.chunks`) in an errored file. ``cause`` is a
    :class:`StateConflictError` (its class is kept) or the reason of an I/O failure;
    ``recovery`` is a command with ``{errored}`` standing for the errored file."""
    errored = save_errored(snapshot, candidates)
    if isinstance(cause, StateConflictError):
        head, cls = f"{cause.message}. Nothing was overwritten", StateConflictError
        after = "re-read the state and record what this run applied again"
    else:
        head, cls = str(cause), StateError
        after = "once the problem is fixed, put it in place: " + recovery.format(errored=errored)
    if errored is None:
        tried = ", ".join(str(c) for c in candidates)
        tail = (f"; the new state (serial {new_serial}) could not be saved anywhere else either "
                f"(tried {tried})")
    else:
        tail = f"; the new state (serial {new_serial}) was saved to {errored}: {after}"
    return cls(head + tail, errored_path=errored)


class StateBackend(ABC):
    """Where the state lives. See the module docstring for the contract."""

    #: first and longest pause between two attempts at a held lock (seconds); jittered
    poll_interval: float = 0.1
    max_poll_interval: float = 1.0
    #: what opens the keys of the states this backend reads (None: the default key file)
    keys: KeySource | None = None

    def new_state(self) -> State:
        """A state never written yet, keyed with this backend's key source."""
        return State.new(self.keys)

    @abstractmethod
    def read(self) -> State | None: ...

    @abstractmethod
    def write(self, state: State) -> None: ...

    @abstractmethod
    def lock_info(self) -> LockInfo | None:
        """The current holder, or None when the state is not locked."""

    @abstractmethod
    def unlock(self, force: bool = False, lock_id: str | None = None) -> LockInfo | None:
        """Remove the lock; returns the holder removed (None: there was no lock). Without
        ``force`` only a lock of this handle, or one known to be abandoned, is removed;
        otherwise :class:`LockError` names the holder. ``lock_id``: remove only that lock."""

    @abstractmethod
    def describe(self) -> str:
        """The location for messages: ``.reconciler/state.json`` or ``s3://bucket/key``."""

    def edit_backup_path(self, state: State) -> Path:
        """Where ``state mv`` / ``state rm`` keep the snapshot they change, by default: the
        working directory (a remote state's own versioning keeps the rest)."""
        return Path.cwd() / f"reconciler-state.{state.serial}.backup.json"

    @abstractmethod
    def _try_lock(self, info: LockInfo, name_holder: bool) -> tuple[bool, LockInfo | None]:
        """One attempt: (True, None) when acquired as ``info``, else (False, holder). The
        holder may be left out (None) unless ``name_holder``: the last attempt before giving
        up, when the error must name it (saves a request per poll for remote backends)."""

    @abstractmethod
    def _release(self, info: LockInfo) -> bool:
        """Release our lock ``info``; False when it is no longer ours (broken by force)."""

    @contextmanager
    def lock(self, operation: str, timeout: float = 0.0) -> Iterator[LockInfo]:
        """Hold the state lock for ``operation`` (``apply``, ``rollback`` …), waiting up to
        ``timeout`` seconds for another holder. A handle holds at most one lock at a time."""
        info = LockInfo.new(operation, self.describe())
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = self.poll_interval
        while True:
            last = time.monotonic() + pause >= deadline
            acquired, holder = self._try_lock(info, name_holder=last)
            if acquired:
                break
            left = deadline - time.monotonic()
            if left <= 0 and not last:       # that attempt outlasted the deadline: one more
                acquired, holder = self._try_lock(info, name_holder=True)
                if acquired:
                    break
            if left <= 0:
                raise LockError(
                    f"state {self.describe()} is locked by {describe_holder(holder)}; "
                    f"gave up after {timeout:g}s. Wait for that run to finish (--lock-timeout), or "
                    f"if it is no longer running: reconciler state unlock --force",
                    held=True, holder=holder)
            time.sleep(min(left, pause * random.uniform(0.8, 1.2)))
            pause = min(pause * 1.5, self.max_poll_interval)
        log.debug("state %s locked for %s (lock id %s)", self.describe(), operation, info.id)
        failed = True
        try:
            yield info
            failed = False
        finally:
            self._settle()
            self._finish(info, failed)

    def _settle(self) -> None:
        """At the end of a lock, while it is still held: a backend keeping a journal compacts
        it into its snapshot here (:mod:`.local`). Must not raise: what it tidies is saved."""

    def _finish(self, info: LockInfo, failed: bool) -> None:
        try:
            still_ours = self._release(info)
        except LockError:
            if failed:        # do not hide the error that is already on its way up
                log.error("could not release the lock %s of state %s; remove it with "
                          "`reconciler state unlock --force`", info.id, self.describe())
                return
            raise
        if not still_ours:
            log.warning("the lock %s of state %s was broken while held (state unlock --force); "
                        "it was left to its new holder", info.id, self.describe())
