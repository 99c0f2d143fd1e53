"""The state document: what our last apply (or rollback) did, per spec and image set.

The state exists so that ``drift`` can tell, later, whether someone changed a managed attribute
behind our back, and so that ``rollback`` knows which version to revert to. Both need only
equality and version ids, so the document holds **no metadata values**: for each managed
attribute path it keeps a keyed hash of the value, HMAC-SHA256 under data keys that the state
holds only sealed by its key source (a KMS key, an environment variable, a key file: see
:mod:`.keychain` and :mod:`.keys`), over ``sha256(salt + canonical JSON of the value)``; the
UIDs in its attribute paths and the spec digests are keyed alike. Without the key nothing in
it can be tested against a guess. Everything else in it is an id, a version, a time or a
digest, and the JSON Schema ``schemas/state.v1.schema.json`` (the file validated against here)
allows nothing else.

Format 2 is the keyed state. A format-1 state (salted hashes only) is still read: the first
use of its keys (:meth:`State.open_keys`) re-keys it in memory, with a notice, and the next
write saves it as format 2. Anything that hashes needs the key; a state whose key cannot be
had raises :class:`~reconciler.core.errors.KeyUnavailableError` naming its source and is
never checked without it.

Serial and lineage follow Terraform: ``lineage`` is a uuid4 fixed when the state is created,
``serial`` grows by one with every write. The *backend* increments it (see
:meth:`State.commit_pending`), so a caller can never write two different snapshots under one serial.
A record remembers the serial of the write that recorded it.

A :class:`State` may be shared by apply's worker threads: mutations and the write of a
snapshot are serialised by one lock.

``drift_checkpoints`` (optional; absent from states written before incremental drift) keeps,
per data store, what the last ``drift`` established (:class:`DriftCheckpoint`): up to which
*service* time every recorded image set was found in sync, which were not, and which records
that check covered (by serial). ``reconciler.engine.drift`` reads and computes them; the state only
stores them.
"""

from __future__ import annotations

import gc
import io
import json
import secrets
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, TypeVar

from .. import __version__
from ..core.canonical import batched
from ..core.errors import StateError
from .hashing import Hashing
from .keychain import StateKeys
from .keys import KeySource
from .records import (OP_APPLY, OP_ROLLBACK, DriftCheckpoint, ImageSetRecord, Refusal, interned,
                      interned_keys, utc_now)
from .validation import FORMAT_VERSION, LEGACY_FORMAT, validate

SALT_BYTES = 16

T = TypeVar("T")


@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: parsing a large state allocates millions of
    objects without a cycle among them, and the collector's passes over them doubled the
    time of a 100,000-record load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parsed_record(obj: dict[str, Any]) -> Any:
    """``json.loads``'s ``object_hook`` for a snapshot whose records its writer validated
    (``records_checked``: only a record has a ``spec_digest``): each record becomes an
    :class:`ImageSetRecord` as soon as it is parsed, so that the parse never holds every
    record's dict at once (at 100,000 records ~65 MB less at its peak, and no slower)."""
    if "spec_digest" in obj and type(obj.get("hashes")) is dict:
        return ImageSetRecord.from_valid(obj)
    return obj


def _key(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _record_text(record: ImageSetRecord) -> str:
    """A record's JSON as it stands at depth 4 of the state document (indent 2)."""
    text = json.dumps(record.to_dict(), sort_keys=True, indent=2, ensure_ascii=False)
    return text.replace("\n", "\n" + " " * 8)


class State(Hashing):
    """The state model. Create with :meth:`new` (or read one from a backend); change with
    :meth:`put` / :meth:`remove`; persist with ``backend.write(state)``."""

    def __init__(self, *, lineage: str, serial: int, salt: str,
                 specs: Mapping[str, Mapping[str, ImageSetRecord]] | None = None,
                 last_checked_at: str | None = None,
                 drift_checkpoints: Mapping[str, DriftCheckpoint] | None = None,
                 refusals: Mapping[str, Mapping[str, Refusal]] | None = None,
                 keys: KeySource | None = None, envelope: Mapping[str, Any] | None = None,
                 legacy: bool = False, where: str = "state"):
        self._lineage = lineage
        self._serial = serial
        self._salt = salt
        self._salt_bytes = bytes.fromhex(salt)
        # The keys: sealed in ``envelope`` (None: a new state, or a format-1 one if ``legacy``)
        # and opened from ``keys`` (None: the default source) on first use.
        self._keys = StateKeys(lineage, where, keys, envelope)
        self._legacy = legacy
        self._specs: dict[str, dict[str, ImageSetRecord]] = {
            name: dict(records) for name, records in (specs or {}).items()}
        self.last_checked_at = last_checked_at
        self._drift: dict[str, DriftCheckpoint] = dict(drift_checkpoints or {})
        self._refusals: dict[str, dict[str, Refusal]] = {
            name: dict(by_id) for name, by_id in (refusals or {}).items()}
        self._lock = threading.RLock()
        # Mutations made, and how many of them the last successful write held: a writer
        # sharing this state with others (apply's GroupCommit) asks :attr:`unsaved` instead of
        # writing a snapshot that holds nothing new.
        self._changes = 0
        self._written = 0
        # The records not validated against the schema yet (by identity, kept alive; records
        # are immutable): those put or replaced since the last validation, or all of them
        # (``_check_all``: records given here, or re-keyed). A save validates only those: one
        # apply saves after every image set, and validating every record each time made a
        # 500-record save take half a second. (Kept this way round, a state read from a file
        # costs nothing here: its records were validated as it was read.)
        self._unchecked: dict[int, ImageSetRecord] = {}
        self._check_all = bool(self._specs)
        # Each record's JSON text, made once (by identity, with the record kept alive), for a
        # backend that writes the whole snapshot at every save (S3: ``keep_texts``); ~660
        # bytes a record, so kept only where asked for (the local backend journals its saves).
        self._texts: dict[int, tuple[ImageSetRecord, str]] = {}
        # The records (spec, image set id) put, replaced or removed since the snapshot this
        # state was read or last written as: what a journal entry of the next write holds
        # (:meth:`changes`), so that a save costs the changed records, not the whole state.
        # ``_whole``: a change no entry can carry (new keys): the next write must be full.
        self._dirty: set[tuple[str, str]] = set()
        self._whole = False

    @classmethod
    def new(cls, keys: KeySource | None = None) -> State:
        """A state never written yet: a fresh lineage and salt, serial 0 (the first write is
        1); its data key is drawn, and sealed with ``keys`` (default: the key file), on first
        use."""
        return cls(lineage=str(uuid.uuid4()), serial=0, salt=secrets.token_hex(SALT_BYTES),
                   keys=keys)

    # -- identity --------------------------------------------------------------------------
    @property
    def lineage(self) -> str:
        return self._lineage

    @property
    def serial(self) -> int:
        """The serial of the snapshot this state was read as or last written as (0: never)."""
        return self._serial

    @property
    def salt(self) -> str:
        return self._salt

    @property
    def salt_bytes(self) -> bytes:
        return self._salt_bytes

    # -- records ---------------------------------------------------------------------------
    def get(self, spec: str, image_set_id: str) -> ImageSetRecord | None:
        with self._lock:
            return self._specs.get(spec, {}).get(image_set_id)

    def put(self, spec: str, record: ImageSetRecord) -> ImageSetRecord:
        """Record (or replace) the record of ``record.image_set_id`` under ``spec``; returns it
        stamped with the serial of the next write, the one that will hold it."""
        if record.last_operation not in (OP_APPLY, OP_ROLLBACK):
            raise ValueError(f"last_operation must be {OP_APPLY!r} or {OP_ROLLBACK!r}")
        with self._lock:
            stamped = replace(record, hashes=interned_keys(record.hashes),
                              serial=self._serial + 1, **interned(record))
            self._specs.setdefault(spec, {})[record.image_set_id] = stamped
            self._unchecked[id(stamped)] = stamped
            self._dirty.add((spec, record.image_set_id))
            self._changes += 1
            return stamped

    def remove(self, spec: str, image_set_id: str | None = None) -> int:
        """Forget one image set of ``spec``, or the whole spec; returns how many records went."""
        with self._lock:
            records = self._specs.get(spec)
            if records is None:
                return 0
            self._changes += 1
            if image_set_id is None:
                self._dirty.update((spec, isid) for isid in records)
                del self._specs[spec]
                return len(records)
            self._dirty.add((spec, image_set_id))
            removed = int(records.pop(image_set_id, None) is not None)
            if not records:
                del self._specs[spec]
            return removed

    def rename(self, old: str, new: str, image_set_id: str | None = None) -> list[str]:
        """Move the records (and refusals) of spec ``old`` — all, or one image set's — under
        ``new``; returns the image set ids moved. A record keeps its serial: what it says of
        the image set did not change, only the spec it is filed under. ``new`` must not hold
        a record of a moved image set (ValueError)."""
        with self._lock:
            records = self._specs.get(old, {})
            ids = sorted(i for i in records if image_set_id in (None, i))
            clash = [i for i in ids if i in self._specs.get(new, {})]
            if clash:
                raise ValueError(f"spec {new} already has a record of image set {clash[0]}")
            for isid in ids:
                self._specs.setdefault(new, {})[isid] = records.pop(isid)
                self._dirty.update(((old, isid), (new, isid)))
                refusal = self._refusals.get(old, {}).pop(isid, None)
                if refusal is not None:
                    self._refusals.setdefault(new, {})[isid] = refusal
            for table in (self._specs, self._refusals):
                if old in table and not table[old]:
                    del table[old]
            self._changes += bool(ids)
            return ids

    def copy(self) -> State:
        """An independent copy (same lineage, serial, salt and keys, opened or not): a view to
        plan against, never to write in place of this one."""
        with self._lock:
            view = State(lineage=self._lineage, serial=self._serial, salt=self._salt,
                         specs=self._specs, last_checked_at=self.last_checked_at,
                         drift_checkpoints=self._drift, refusals=self._refusals,
                         legacy=self._legacy)
            view._keys = self._keys
            view._dirty, view._whole = set(self._dirty), self._whole   # the same base snapshot
            return view

    def mark_checked(self, when: str | None = None, spec: str | None = None,
                     image_set_id: str | None = None) -> None:
        """Record a drift check: of the whole state (no ``spec``), or of one image set. The
        record keeps its serial: a check is not an operation on the image set."""
        when = when or utc_now()
        with self._lock:
            self._changes += 1
            if spec is None:
                self.last_checked_at = when
                return
            record = self._specs.get(spec, {}).get(image_set_id or "")
            if record is None:
                raise KeyError(f"no record of image set {image_set_id} under spec {spec}")
            checked = self._specs[spec][record.image_set_id] = replace(record, last_checked_at=when)
            self._unchecked[id(checked)] = checked
            self._dirty.add((spec, record.image_set_id))

    def refusal(self, spec: str, image_set_id: str) -> Refusal | None:
        with self._lock:
            return self._refusals.get(spec, {}).get(image_set_id)

    def refuse(self, spec: str, image_set_id: str, refusal: Refusal) -> None:
        """Remember that the service refused this request (see :class:`Refusal`)."""
        with self._lock:
            self._refusals.setdefault(spec, {})[image_set_id] = refusal
            self._changes += 1

    def forgive(self, spec: str, image_set_id: str) -> bool:
        """Forget a refusal (a write of the spec went through, or it was removed)."""
        with self._lock:
            by_id = self._refusals.get(spec, {})
            found = by_id.pop(image_set_id, None) is not None
            if not by_id:
                self._refusals.pop(spec, None)
            self._changes += found
            return found

    def drift_checkpoint(self, datastore_id: str) -> DriftCheckpoint | None:
        with self._lock:
            return self._drift.get(datastore_id)

    def drift_checkpoints(self) -> dict[str, DriftCheckpoint]:
        with self._lock:
            return dict(self._drift)

    def set_drift_checkpoints(self, checkpoints: Mapping[str, DriftCheckpoint]) -> None:
        """Replace every data store's drift checkpoint (those not given are dropped)."""
        with self._lock:
            self._drift = dict(checkpoints)
            self._changes += 1

    def spec_names(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def records(self, spec: str | None = None) -> list[tuple[str, ImageSetRecord]]:
        """``(spec name, record)`` pairs, sorted by spec name then image set id."""
        with self._lock:
            names = [spec] if spec is not None else sorted(self._specs)
            return [(name, self._specs[name][isid]) for name in names if name in self._specs
                    for isid in sorted(self._specs[name])]

    def __iter__(self) -> Iterator[tuple[str, ImageSetRecord]]:
        return iter(self.records())

    def __len__(self) -> int:
        with self._lock:
            return sum(len(records) for records in self._specs.values())

    # -- persistence -----------------------------------------------------------------------
    def _head(self, serial: int | None) -> dict[str, Any]:
        """The document without its records (held under the lock by the caller)."""
        if self._keys.envelope is None and not self._legacy:
            self.open_keys()          # a new state: its keys are drawn and sealed now
        doc: dict[str, Any] = {
            "format_version": LEGACY_FORMAT if self._legacy else FORMAT_VERSION,
            "lineage": self._lineage,
            "serial": self._serial if serial is None else serial,
            "salt": self._salt,
            "reconciler_version": __version__,
            "last_checked_at": self.last_checked_at,
        }
        if not self._legacy:
            doc["keys"] = self._keys.envelope
        if self._drift:      # optional: a state never checked incrementally has none
            doc["drift_checkpoints"] = {ds: cp.to_dict() for ds, cp in sorted(self._drift.items())}
        if self._refusals:   # optional: only where the service refused a request
            doc["refusals"] = {name: {isid: r.to_dict() for isid, r in sorted(by_id.items())}
                               for name, by_id in sorted(self._refusals.items())}
        return doc

    def to_dict(self, serial: int | None = None) -> dict[str, Any]:
        with self._lock:
            return {**self._head(serial), "specs": {
                name: {"image_sets": {isid: rec.to_dict() for isid, rec in records.items()}}
                for name, records in self._specs.items()}}

    def to_json(self, serial: int | None = None) -> str:
        """Deterministic JSON (sorted keys, indent 2), validated against the schema first: a
        document that would not validate (a value where a hash belongs) is never written.
        Byte for byte what ``json.dumps(to_dict(), indent=2, sort_keys=True) + "\\n"`` writes;
        see :meth:`chunks` (a large state is better written in pieces than made one string)."""
        with self._lock:
            return "".join(self.chunks(serial))

    def chunks(self, serial: int | None = None, keep_texts: bool = False) -> Iterator[str]:
        """:meth:`to_json`'s text in pieces of about 64 KB, validated before the first: what a
        full write streams to its file, so that the document is never whole in memory (at
        100,000 records it is ~95 MB, and the joined record texts as much again).

        Validated now (the call), produced as iterated: iterate under the state's lock (the
        backends do, within :meth:`commit_pending` or :meth:`saved_snapshot`). A save happens
        after every image set, so its cost must not be the whole state's: records validated
        before (read, or written earlier) are not validated again. ``keep_texts``: keep each
        record's text for the next call (records are immutable), for a backend writing the
        whole document at every save; otherwise none is kept."""
        with self._lock:
            head = self._head(serial)
            fresh: dict[str, dict[str, Any]] = {}
            if self._check_all or self._unchecked:
                for name, records in self._specs.items():
                    for isid, rec in records.items():
                        if self._check_all or id(rec) in self._unchecked:
                            body = fresh.setdefault(name, {"image_sets": {}})
                            body["image_sets"][isid] = rec.to_dict()
            validate({**head, "specs": fresh}, "state to be written")
            self._unchecked, self._check_all = {}, False
            if not keep_texts:
                self._texts = {}
            return batched(self._pieces(head, keep_texts))

    def _pieces(self, head: dict[str, Any], keep_texts: bool) -> Iterator[str]:
        """The document as json.dumps(indent=2, sort_keys=True) writes it, a record at a time."""
        marker = "@@reconciler-specs@@"
        text = json.dumps({**head, "specs": marker}, sort_keys=True, indent=2, ensure_ascii=False)
        before, after = text.split(json.dumps(marker), 1)
        yield before
        if not self._specs:
            yield "{}"
        old = self._texts
        texts: dict[int, tuple[ImageSetRecord, str]] = {}
        for number, name in enumerate(sorted(self._specs)):
            records = self._specs[name]
            yield (("{\n" if number == 0 else ",\n")
                   + f'    {_key(name)}: {{\n      "image_sets": {{\n')
            for index, isid in enumerate(sorted(records)):
                rec = records[isid]
                kept = old.get(id(rec))
                text = kept[1] if kept is not None and kept[0] is rec else _record_text(rec)
                if keep_texts:
                    texts[id(rec)] = (rec, text)
                yield (",\n" if index else "") + f"        {_key(isid)}: {text}"
            yield "\n      }\n    }"
        if self._specs:
            yield "\n  }"
        if keep_texts:
            self._texts = texts
        yield after + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "state",
                  keys: KeySource | None = None) -> State:
        """Parse and validate; ``source`` (the backend location) names the state in errors;
        ``keys`` opens its keys when they are first needed (default: the key file)."""
        with no_gc():
            try:
                doc = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                where = f":{exc.lineno}:{exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                raise StateError(f"{source}{where}: the state is not valid JSON "
                                 f"({type(exc).__name__})") from None
            return cls.from_dict(doc, source, keys)

    @classmethod
    def from_dict(cls, doc: Any, source: str = "state", keys: KeySource | None = None,
                  records_checked: bool = False) -> State:
        """``records_checked``: the records are as a writer validated them (see
        :func:`~.validation.validate`); then its records may already be ImageSetRecords
        (parsed with :func:`parsed_record`). ``doc`` is consumed: each record is taken out of
        it as it becomes an :class:`ImageSetRecord` (its ``hashes`` given, not copied), so
        that the parsed dicts are freed as the records are made, not after."""
        validate(doc, source, records_checked)
        specs: dict[str, dict[str, ImageSetRecord]] = {}
        with no_gc():
            for name, body in doc["specs"].items():
                image_sets = body["image_sets"]
                records = specs[name] = {}
                while image_sets:
                    isid, rec = image_sets.popitem()
                    if type(rec) is ImageSetRecord:      # made as parsed: filed under its own id
                        records[rec.image_set_id] = rec
                    else:
                        records[isid] = ImageSetRecord.from_valid(rec, isid)
        drift = {ds: DriftCheckpoint.from_dict(cp)
                 for ds, cp in (doc.get("drift_checkpoints") or {}).items()}
        refusals = {name: {isid: Refusal.from_dict(r) for isid, r in by_id.items()}
                    for name, by_id in (doc.get("refusals") or {}).items()}
        state = cls(lineage=doc["lineage"], serial=doc["serial"], salt=doc["salt"],
                    last_checked_at=doc.get("last_checked_at"), drift_checkpoints=drift,
                    refusals=refusals, keys=keys, envelope=doc.get("keys"),
                    legacy=doc["format_version"] == LEGACY_FORMAT, where=source)
        state._specs = specs          # made here: not copied, and validated as read
        return state

    def commit_pending(self, write: Callable[[Pending], T]) -> T:
        """For backends: the write of this state at ``serial + 1``. ``write(pending)`` asks
        the :class:`Pending` for what it stores, the whole snapshot or only what changed; on
        success the state *is* that serial. Holding the state's lock throughout means no
        record put meanwhile is stamped with a serial it is not in."""
        with self._lock:
            new_serial = self._serial + 1
            result = write(Pending(self, new_serial))
            self._serial = new_serial
            self._written = self._changes
            self._dirty.clear()
            self._whole = False
            return result

    def changes(self, serial: int) -> dict[str, Any] | None:
        """What the write of ``serial`` changes in the snapshot this state was read or last
        written as (a journal entry: :mod:`.journal`): the document's head at ``serial``, the
        records put or replaced (``put``: ``[spec, image set id, record]``) and removed
        (``gone``: ``[spec, image set id]``). Validated like :meth:`to_json` validates. None
        when no entry can say it (new keys, a format-1 state): the write must be full."""
        with self._lock:
            if self._whole or self._legacy or self._keys.envelope is None:
                return None
            head = self._head(serial)
            put: list[list[Any]] = []
            gone: list[list[str]] = []
            fresh: dict[str, dict[str, Any]] = {}
            for name, isid in sorted(self._dirty):
                rec = self._specs.get(name, {}).get(isid)
                if rec is None:
                    gone.append([name, isid])
                    continue
                doc = rec.to_dict()
                put.append([name, isid, doc])
                if self._check_all or id(rec) in self._unchecked:
                    fresh.setdefault(name, {"image_sets": {}})["image_sets"][isid] = doc
            validate({**head, "specs": fresh}, "state to be written")
            for name, isid, _ in put:
                self._unchecked.pop(id(self._specs[name][isid]), None)
            return {"serial": serial, "head": head, "put": put, "gone": gone}

    def streamed(self, write: Callable[[Iterator[str]], T], serial: int | None = None) -> T:
        """``write(chunks)`` of the document as it is now (:meth:`chunks`), under the state's
        lock: a file written from it never holds the whole text in memory."""
        with self._lock:
            return write(self.chunks(serial))

    def saved_snapshot(self, write: Callable[[Iterator[str]], T]) -> T | None:
        """``write(chunks)`` of the snapshot this state was last read or written as (a
        journal's compaction streams it to the file), under the state's lock; None, and
        ``write`` not called, when the state holds changes not saved yet, or was never
        written."""
        with self._lock:
            if self._changes != self._written or self._serial == 0:
                return None
            return write(self.chunks(self._serial))

    @property
    def unsaved(self) -> bool:
        """Whether a mutation (through this class's methods) was made since the last write."""
        with self._lock:
            return self._changes != self._written

    def __repr__(self) -> str:
        return f"State(lineage={self._lineage!r}, serial={self._serial}, records={len(self)})"


class Pending:
    """One write about to be stored as ``serial``: the whole snapshot (:meth:`chunks`,
    :meth:`body`) or what changed since the snapshot the state was read or last written as
    (:meth:`changes`). Each is made only when the backend asks for it, under the state's
    lock."""

    def __init__(self, state: State, serial: int):
        self.state, self.serial = state, serial

    def chunks(self) -> Iterator[str]:
        """The whole snapshot in pieces (:meth:`State.chunks`): what a full write streams."""
        return self.state.chunks(self.serial)

    def body(self, keep_texts: bool = False) -> bytes:
        """The whole snapshot as one UTF-8 body (an object store's PUT), encoded piece by
        piece into one buffer: the text is never whole as a str beside it."""
        buffer = io.BytesIO()
        for chunk in self.state.chunks(self.serial, keep_texts):
            buffer.write(chunk.encode("utf-8"))
        return buffer.getvalue()       # the buffer's own bytes: no copy

    def changes(self) -> dict[str, Any] | None:
        return self.state.changes(self.serial)
