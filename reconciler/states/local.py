"""The local state backend: ``.reconciler/state.json`` beside the project's specs.

The default for a single machine or one CI job. Files, all in the state's directory (created
0700, files 0600): ``state.json`` (a full snapshot), ``state.json.journal`` (the writes since
that snapshot, :mod:`reconciler.states.journal`; only while a large state is being written),
``state.json.backup`` (the snapshot before), ``state.json.lock`` (see
:mod:`reconciler.states.locking`), and ``state.json.errored`` when a write failed (or
``errored.state.json`` in the working directory if the state's directory is not writable).

A write, under an ``flock`` on the directory (so that the check and the store are one step
for every writer on this machine, locked or not): find the stored lineage and serial (the
last journal entry's, or the snapshot's) and refuse if they are not what the state was read
as; then either

* **append** the changed records to the journal (:meth:`State.changes`: one line, one
  ``write``, ``fsync``) — when the snapshot is at least :attr:`LocalBackend.journal_min_bytes`
  and the journal stays smaller than :attr:`LocalBackend.journal_ratio` × the snapshot; or
* write a **full** snapshot (a compaction): keep the snapshot it replaces as the backup (a
  hard link: no copy), write the new one atomically (:func:`reconciler.states.files.atomic_write`),
  then remove the journal it holds.

The end of the lock (apply, rollback, drift, ``state mv`` …) compacts the journal, so between
runs ``state.json`` is the whole state again. A save costs the records it changes; the
snapshot is rewritten once per run, or when the journal has grown as large as it (amortised:
each byte of a compaction was paid for by a byte appended).

The stored identity is not re-read for every write: the backend remembers what it last read
or wrote, with the files' ``stat`` (device, inode, size, mtime): another writer replaces the
snapshot (a new inode) or appends to the journal (a new size), and then, only then, the files
are read again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.canonical import digest
from ..core.errors import LockError, StateConflictError, StateError
from . import files, journal
from .backend import LockInfo, StateBackend, check_expected, unlock_refused, write_failed
from .document import Pending, State, no_gc, parsed_record
from .locking import LockFile

ERRORED_IN_CWD = "errored.state.json"

# The journal's append, separate so that tests can tear one (a crash mid-write).
_write = os.write

log = logging.getLogger(__name__)

_Stat = tuple[int, int, int, int]


def _stat(path: Path) -> _Stat | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _fstat(fd: int) -> _Stat:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Stored:
    """What is stored, as last read or written by this handle: valid while both files still
    have the ``stat`` recorded here."""

    snapshot: _Stat
    journal: _Stat | None         # None: no journal file
    lineage: str
    base_serial: int              # the snapshot's
    serial: int                   # the journal's last entry, or the snapshot's
    keys: str | None              # digest of the keys section
    appendable: bool              # the journal extends this snapshot and ends with a whole line

    @property
    def snapshot_bytes(self) -> int:
        return self.snapshot[2]

    @property
    def journal_bytes(self) -> int:
        return self.journal[2] if self.journal else 0


class LocalBackend(StateBackend):
    #: how long to wait for a lock caught in its creation window to name its holder (seconds)
    creation_wait: float = 0.5
    #: the smallest snapshot whose saves go to a journal: below it a full write is as cheap
    journal_min_bytes: int = 1 << 20
    #: compact once the journal would outgrow this fraction of the snapshot
    journal_ratio: float = 1.0

    def __init__(self, path: Path, root: Path | None = None):
        self.path = Path(path).absolute()
        self._root = Path(root).absolute() if root is not None else None
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.errored_path = self.path.with_name(self.path.name + ".errored")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lockfile = LockFile(self.lock_path)
        self._write_mutex = threading.Lock()
        self._stored: _Stored | None = None
        self._journaled: State | None = None      # the state whose saves the journal holds

    def describe(self) -> str:
        if self._root is not None and self.path.is_relative_to(self._root):
            return str(self.path.relative_to(self._root))
        return str(self.path)

    def edit_backup_path(self, state: State) -> Path:
        """Beside the state: ``state.json.<serial>.backup`` (kept; the next write does not
        replace it as it replaces ``state.json.backup``)."""
        return self.path.with_name(f"{self.path.name}.{state.serial}.backup")

    # -- reading ---------------------------------------------------------------------------
    def _read_files(self) -> tuple[bytes, _Stat, bytes, _Stat | None] | None:
        """The snapshot and the journal as one consistent pair: read again if the snapshot
        was replaced meanwhile (a compaction between the two reads)."""
        for _ in range(5):
            try:
                with open(self.path, "rb") as handle:
                    snap_stat = _fstat(handle.fileno())
                    data = handle.read()
            except FileNotFoundError:
                return None
            try:
                with open(self.journal_path, "rb") as handle:
                    journal_stat: _Stat | None = _fstat(handle.fileno())
                    journal_data = handle.read()
            except FileNotFoundError:
                journal_stat, journal_data = None, b""
            if _stat(self.path) == snap_stat:
                if journal_stat is not None:     # what was read, not what is there now
                    journal_stat = (*journal_stat[:2], len(journal_data), journal_stat[3])
                return data, snap_stat, journal_data, journal_stat
        raise StateError(f"{self.describe()}: the state kept changing while being read; try again")

    def read(self) -> State | None:
        try:
            found = self._read_files()
        except OSError as exc:
            raise StateError(f"{self.describe()}: cannot read the state ({exc.strerror})") from exc
        if found is None:
            return None
        data, snap_stat, journal_data, journal_stat = found
        del found
        # The snapshot's digest now, then its bytes are let go before the parse: at 100,000
        # records they are ~95 MB, beside the text as much again and the parsed document.
        snapshot_sha256 = journal.snapshot_digest(data) if journal_data else None
        try:
            with no_gc():
                found_journal = self._parsed_journal(journal_data)
                # Bytes whose digest their writer recorded are records it validated: only a
                # snapshot changed since (by hand) is validated record by record again. Those
                # records become ImageSetRecords as they are parsed (never all their dicts at
                # once); the others are parsed as dicts, to be validated.
                checked = (found_journal is not None and found_journal.snapshot_sha256 is not None
                           and found_journal.snapshot_sha256 == snapshot_sha256)
                text = self._decoded(data)
                del data
                doc = self._parse(text, records_checked=checked)
                log_ = self._extending(doc, found_journal)
                if checked and log_ is None:     # named by digest yet of another serial: by hand
                    checked = False
                    doc = self._parse(text)
                del text
                base = doc.get("serial") if isinstance(doc, dict) else None
                if log_ is not None:
                    journal.replay(doc, log_, self._journal_name())
                state = State.from_dict(doc, source=self.describe(), keys=self.keys,
                                        records_checked=checked)
        except StateError as exc:
            if self.backup_path.exists():
                raise StateError(f"{exc.message}; the previous snapshot is in "
                                 f"{self.backup_path.name} beside it") from None
            raise
        # Not remembered when the journal's last line is torn: the next write reads the files
        # again under the directory lock, and cuts it off before appending.
        torn = log_ is not None and log_.torn > 0
        self._stored = None if torn else _Stored(snap_stat, journal_stat, state.lineage, base,
                                                 state.serial, state.keys_fingerprint(),
                                                 log_ is not None)
        return state

    def _journal_name(self) -> str:
        return self.describe() + ".journal" if self._root else str(self.journal_path)

    def _parse(self, data: bytes | str, records_checked: bool = False) -> dict:
        """``records_checked``: the records are made as parsed
        (:func:`~.document.parsed_record`)."""
        try:
            return json.loads(data, object_hook=parsed_record if records_checked else None)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f":{exc.lineno}:{exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise StateError(f"{self.describe()}{where}: the state is not valid JSON "
                             f"({type(exc).__name__})") from None

    def _decoded(self, data: bytes) -> str:
        """The text ``json.loads(data)`` would parse (the encoding detected as it does)."""
        try:
            return data.decode(json.detect_encoding(data), "surrogatepass")
        except UnicodeDecodeError:
            raise StateError(f"{self.describe()}: the state is not valid JSON "
                             f"(UnicodeDecodeError)") from None

    def _journal_of(self, doc, data: bytes) -> journal.Journal | None:
        """The journal of the snapshot ``doc``; None when there is none, or it is stale (it
        extends another snapshot: a compaction, or a snapshot put in place by hand)."""
        return self._extending(doc, self._parsed_journal(data))

    def _parsed_journal(self, data: bytes) -> journal.Journal | None:
        return journal.parse(data, self._journal_name()) if data else None

    def _extending(self, doc, found: journal.Journal | None) -> journal.Journal | None:
        """``found`` if it is the journal of the snapshot ``doc``; None if it is stale."""
        if found is None:
            return None
        if not isinstance(doc, dict) or not found.extends(doc.get("lineage"), doc.get("serial")):
            log.debug("%s: a stale journal (of serial %s) is ignored", self.describe(),
                      found.base_serial)
            return None
        return found

    def _stored_identity(self) -> _Stored | None:
        """What is stored, without a full validation: remembered when neither file changed
        since this handle last read or wrote them, else read (a torn journal tail is cut off
        here, under the directory lock)."""
        remembered = self._stored
        if remembered is not None and _stat(self.path) == remembered.snapshot \
                and _stat(self.journal_path) == remembered.journal:
            return remembered
        self._stored = None
        found = self._read_files()
        if found is None:
            return None
        data, snap_stat, journal_data, journal_stat = found
        try:
            doc = json.loads(data)
            lineage, serial = str(doc["lineage"]), int(doc["serial"])
            keys = doc.get("keys")
            log_ = self._journal_of(doc, journal_data)
        except (ValueError, TypeError, KeyError, StateError):
            raise StateError(f"{self.describe()}: the stored state is unreadable; refusing to "
                             f"overwrite it (the previous snapshot is in {self.backup_path.name})") from None
        if log_ is not None:
            if log_.torn:
                os.truncate(self.journal_path, log_.valid_bytes)
                journal_stat = _stat(self.journal_path)
            serial = log_.serial
        return _Stored(snap_stat, journal_stat, lineage, int(doc["serial"]), serial,
                       None if keys is None else digest(keys), log_ is not None)

    # -- writing ---------------------------------------------------------------------------
    def write(self, state: State) -> None:
        with self._write_mutex:
            state.commit_pending(lambda pending: self._store(state, pending))

    def compact(self, state: State) -> bool:
        """Write ``state`` (as last read or written, at its serial) as the full snapshot, the
        journal it holds removed; False when that cannot be done now (unsaved changes, or
        another write since). Done by the end of every lock."""
        def full(chunks: Iterator[str]) -> bool:
            with self._directory_lock():
                stored = self._stored_identity()
                if stored is None or (stored.lineage, stored.serial) != (state.lineage, state.serial):
                    return False
                if stored.serial == stored.base_serial:
                    return True                          # the snapshot is the state already
                self._full(state, chunks, stored, state.serial)
            return True

        with self._write_mutex:
            return bool(state.saved_snapshot(full))

    def _settle(self) -> None:
        state, self._journaled = self._journaled, None
        if state is None:
            return
        try:
            self.compact(state)
        except (OSError, StateError) as exc:     # the journal still holds every save
            log.warning("%s: could not compact the journal into the snapshot (%s); it is "
                        "kept, and read with it", self.describe(), exc)

    def _directory_lock(self):
        backend = self

        class _Held:
            def __enter__(self):
                files.ensure_dir(backend.path.parent)
                self.fd = os.open(backend.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fcntl.flock(self.fd, fcntl.LOCK_EX)

            def __exit__(self, *exc):
                os.close(self.fd)

        return _Held()

    def _store(self, state: State, pending: Pending) -> None:
        try:
            with self._directory_lock():
                stored = self._stored_identity()
                check_expected(self.describe(), state,
                               (stored.lineage, stored.serial) if stored else None)
                entry = self._entry(state, pending, stored)
                if entry is not None:
                    self._append(state, stored, entry, pending.serial)
                    self._journaled = state
                else:
                    self._full(state, pending.chunks(), stored, pending.serial)
        except StateConflictError as exc:
            raise self._failed(exc, pending) from None
        except StateError as exc:           # the stored file is unreadable
            raise self._failed(exc.message, pending) from None
        except OSError as exc:
            self._stored = None             # look again next time (a torn append is cut then)
            reason = f"could not write the state to {self.describe()} ({exc.strerror or type(exc).__name__})"
            raise self._failed(reason, pending) from exc

    def _entry(self, state: State, pending: Pending, stored: _Stored | None) -> bytes | None:
        """The journal line of this write, or None when it is to be full."""
        if stored is None or stored.snapshot_bytes < self.journal_min_bytes:
            return None
        if stored.journal is None or not stored.appendable:
            return None         # none (a snapshot written before journals), or stale: start one
        if stored.keys is None or stored.keys != state.keys_fingerprint():
            return None                                  # new keys: no old hash may remain
        changes = pending.changes()
        if changes is None:
            return None
        entry = journal.line(changes)
        if stored.journal_bytes + len(entry) > stored.snapshot_bytes * self.journal_ratio:
            return None                                  # compact: the journal has grown
        return entry

    def _append(self, state: State, stored: _Stored, entry: bytes, new_serial: int) -> None:
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            view = memoryview(entry)
            while view:
                view = view[_write(fd, view):]
            os.fsync(fd)                 # acknowledged (the write returns) only once on disk
            journal_stat = _fstat(fd)
        finally:
            os.close(fd)
        self._stored = _Stored(stored.snapshot, journal_stat, state.lineage, stored.base_serial,
                               new_serial, stored.keys, True)

    def _full(self, state: State, chunks: Iterator[str], stored: _Stored | None,
              new_serial: int) -> None:
        """Write the snapshot ``chunks`` make, streamed to its file and hashed as it goes
        (at 100,000 records it is ~95 MB: never one string, nor one bytes, in memory)."""
        files.remove_stale_temps(self.path)
        same_keys = (stored is not None and stored.keys is not None
                     and stored.keys == state.keys_fingerprint())
        if same_keys:
            self._link_backup()      # the backup is the snapshot being replaced (a hard link)
            size, sha256 = files.atomic_write(self.path, chunks)
        elif stored is not None:
            # That snapshot was keyed otherwise (format 1, or before a rekey): a backup under
            # a retired key would keep what re-keying is meant to retire, so the backup is
            # the new snapshot too, written first as before, and copied.
            size, sha256 = files.atomic_write(self.backup_path, chunks)
            files.atomic_write(self.path, files.file_pieces(self.backup_path))
        else:
            size, sha256 = files.atomic_write(self.path, chunks)
        snap_stat = _stat(self.path)
        # The journal of the new snapshot: only its header, for a snapshot large enough to
        # journal the next saves; none for a small one. Until this is done, the journal
        # there (if any) is stale (it names the snapshot replaced) and is not replayed.
        if size >= self.journal_min_bytes:
            files.atomic_write(self.journal_path, journal.header(state.lineage, new_serial, sha256))
        elif stored is not None and stored.journal is not None:
            self.journal_path.unlink(missing_ok=True)
            files.fsync_dir(self.path.parent)
        journal_stat = _stat(self.journal_path)
        self._stored = _Stored(snap_stat, journal_stat, state.lineage, new_serial, new_serial,
                               state.keys_fingerprint(), journal_stat is not None)
        self._journaled = None

    def _link_backup(self) -> None:
        temp = self.path.with_name(f"{files.temp_prefix(self.path)}backup.{uuid.uuid4().hex}{files.TEMP_SUFFIX}")
        os.link(self.path, temp)
        try:
            files._rename(temp, self.backup_path)
        finally:
            # rename() of two links of one file does nothing (POSIX): the backup is already
            # this snapshot (a write that died after the backup step), and the link stays.
            temp.unlink(missing_ok=True)

    def _failed(self, cause: StateConflictError | str, pending: Pending) -> StateError:
        return write_failed(cause, pending.chunks, pending.serial,
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
