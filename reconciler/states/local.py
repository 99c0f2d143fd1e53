"""The local state backend: ``.reconciler/state.json`` beside the project's specs.

The default for a single machine or one CI job. Files, all in the state's directory (created
0700): ``state.json`` (mode 0600), ``state.json.backup`` (the previous snapshot),
``state.json.lock`` (see :mod:`reconciler.states.locking`), and ``state.json.errored`` when a
write failed (or ``errored.state.json`` in the working directory if the state's directory
is not writable).

A write, under an ``flock`` on the directory (so that the check and the rename are one step
for every writer on this machine, locked or not): read the stored lineage and serial and
refuse if they are not what the state was read as; keep the stored bytes as the backup; write
the new snapshot atomically (:func:`reconciler.states.files.atomic_write`).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

from ..core.canonical import digest
from ..core.errors import LockError, StateConflictError, StateError
from . import files
from .backend import LockInfo, StateBackend, check_expected, unlock_refused, write_failed
from .document import State
from .locking import LockFile

ERRORED_IN_CWD = "errored.state.json"


class LocalBackend(StateBackend):
    #: how long to wait for a lock caught in its creation window to name its holder (seconds)
    creation_wait: float = 0.5

    def __init__(self, path: Path, root: Path | None = None):
        self.path = Path(path).absolute()
        self._root = Path(root).absolute() if root is not None else None
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.errored_path = self.path.with_name(self.path.name + ".errored")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lockfile = LockFile(self.lock_path)
        self._write_mutex = threading.Lock()

    def describe(self) -> str:
        if self._root is not None and self.path.is_relative_to(self._root):
            return str(self.path.relative_to(self._root))
        return str(self.path)

    def edit_backup_path(self, state: State) -> Path:
        """Beside the state: ``state.json.<serial>.backup`` (kept; the next write does not
        replace it as it replaces ``state.json.backup``)."""
        return self.path.with_name(f"{self.path.name}.{state.serial}.backup")

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> State | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.describe()}: cannot read the state ({exc.strerror})") from exc
        try:
            return State.from_json(data, source=self.describe(), keys=self.keys)
        except StateError as exc:
            if self.backup_path.exists():
                raise StateError(f"{exc.message}; the previous snapshot is in "
                                 f"{self.backup_path.name} beside it") from None
            raise

    def _stored_identity(self) -> tuple[bytes, tuple[str, int], str | None] | None:
        """The stored bytes with their (lineage, serial) and a digest of their keys section,
        without a full validation."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(data)
            keys = doc.get("keys")
            return (data, (str(doc["lineage"]), int(doc["serial"])),
                    None if keys is None else digest(keys))
        except (ValueError, TypeError, KeyError):
            raise StateError(f"{self.describe()}: the stored state is unreadable; refusing to "
                             f"overwrite it (the previous snapshot is in {self.backup_path.name})") from None

    # -- writing ---------------------------------------------------------------------------
    def write(self, state: State) -> None:
        with self._write_mutex:
            state.commit(lambda text, serial: self._store(state, text, serial))

    def _store(self, state: State, text: str, new_serial: int) -> None:
        dir_fd = None
        try:
            files.ensure_dir(self.path.parent)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            stored = self._stored_identity()
            check_expected(self.describe(), state, stored[1] if stored else None)
            files.remove_stale_temps(self.path)
            if stored is not None:
                # The backup is the previous snapshot, unless that one was keyed otherwise
                # (format 1, or before a rekey): a backup under a retired key would keep
                # what re-keying is meant to retire, so it becomes the new snapshot too.
                same_keys = stored[2] is not None and stored[2] == state.keys_fingerprint()
                files.atomic_write(self.backup_path, stored[0] if same_keys
                                   else text.encode("utf-8"))
            files.atomic_write(self.path, text.encode("utf-8"))
        except StateConflictError as exc:
            raise self._failed(exc, text, new_serial) from None
        except StateError as exc:           # the stored file is unreadable
            raise self._failed(exc.message, text, new_serial) from None
        except OSError as exc:
            reason = f"could not write the state to {self.describe()} ({exc.strerror or type(exc).__name__})"
            raise self._failed(reason, text, new_serial) from exc
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def _failed(self, cause: StateConflictError | str, text: str, new_serial: int) -> StateError:
        return write_failed(cause, text, new_serial,
                            [self.errored_path, Path.cwd() / ERRORED_IN_CWD],
                            recovery=f"mv {{errored}} {self.path}")

    # -- locking ---------------------------------------------------------------------------
    def _try_lock(self, info: LockInfo, name_holder: bool) -> tuple[bool, LockInfo | None]:
        try:
            acquired, holder = self._lockfile.try_acquire(info)
            if not acquired and holder is None and name_holder:
                holder = self._lockfile.wait_for_holder(self.creation_wait)   # caught mid-creation
            return acquired, holder
        except OSError as exc:
            raise LockError(f"state {self.describe()}: cannot lock {self.lock_path.name} "
                            f"({exc.strerror or type(exc).__name__})") from exc

    def _release(self, info: LockInfo) -> bool:
        held = self._lockfile.held
        if held is None or held.id != info.id:
            return False
        try:
            return self._lockfile.release()
        except OSError as exc:
            raise LockError(f"state {self.describe()}: cannot remove {self.lock_path.name} "
                            f"({exc.strerror or type(exc).__name__})") from exc

    def lock_info(self) -> LockInfo | None:
        status = self._lockfile.read()
        if status is None:
            return None
        return status[1] or LockInfo(id="", operation="unknown", who="unknown", host="unknown",
                                     pid=0, since="", version="", location=self.describe())

    def lock_is_stale(self) -> bool | None:
        """None: no lock; True: its holder is gone (the next lock() takes it over)."""
        status = self._lockfile.read()
        return None if status is None else not status[0]

    def unlock(self, force: bool = False, lock_id: str | None = None) -> LockInfo | None:
        try:
            result = self._lockfile.break_lock(force, lock_id)
        except OSError as exc:
            raise LockError(f"state {self.describe()}: cannot remove {self.lock_path.name} "
                            f"({exc.strerror or type(exc).__name__})") from exc
        if result is None:
            return None
        removed, holder = result
        if not removed:
            raise unlock_refused(self.describe(), holder, lock_id)
        return holder
