"""The records a state keeps: one :class:`ImageSetRecord` per spec and image set (what our
last apply or rollback did, as hashes), a :class:`Refusal` per request the service refused,
and a :class:`DriftCheckpoint` per data store. Immutable; :class:`~.document.State` holds and
serialises them."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

OP_APPLY, OP_ROLLBACK = "apply", "rollback"


def utc_now() -> str:
    """Now, as the state writes times: UTC, ISO 8601, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def utc_time(moment: datetime) -> str:
    """A timezone-aware datetime as the state writes times (converted to UTC)."""
    if moment.tzinfo is None:
        raise ValueError("state times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class ImageSetRecord:
    """What our last operation on one image set did. ``hashes`` maps managed attribute paths
    (``Patient.PatientName``, ``Series[1.2.3].Instances[1.2.3.4]`` …) to
    :meth:`State.hash_value` of the value applied. ``serial`` is stamped by :meth:`State.put`.

    A state holds one per image set (100,000 in a large one), so it has slots, not a
    ``__dict__``: a record read from a state file was its parsed dict, about 650 bytes of the
    ~1,950 a record cost; with slots the record itself is ~150."""

    datastore_id: str
    image_set_id: str
    version_before: str
    version_after: str | None     # None: a pending write (see schemas/state.v1)
    spec_digest: str
    hashes: Mapping[str, str] = field(default_factory=dict)
    applied_at: str = field(default_factory=utc_now)
    last_operation: str = OP_APPLY
    last_checked_at: str | None = None
    serial: int = 0
    # The version before our *first* write to this image set for this spec: where reverting
    # a removed spec goes back to (None in records written before it existed: then
    # ``version_before`` is the best known).
    version_origin: str | None = None
    # A peer of a study update (no spec targets it; recorded under the leader's spec): the
    # leader's image set id. The record stays managed as long as the leader's does.
    peer_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in _FIELDS}
        doc["hashes"] = dict(self.hashes)
        for optional in ("version_origin", "peer_of"):
            if doc[optional] is None:
                del doc[optional]
        return doc

    @property
    def origin(self) -> str:
        """The version a revert of this record goes back to."""
        return self.version_origin or self.version_before

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ImageSetRecord:
        return cls(**{**doc, "hashes": dict(doc["hashes"])})

    @classmethod
    def from_valid(cls, doc: dict[str, Any], image_set_id: str | None = None) -> ImageSetRecord:
        """:meth:`from_dict` of a record the schema has validated (so it has exactly the
        fields), without the dataclass's ``__init__`` (most of a 100,000-record load after the
        JSON parse); ``doc["hashes"]`` is copied with its paths interned. The strings many
        records repeat (data store, spec digest, versions, times, operation) are interned, so
        that 100,000 records hold one copy of each, not 100,000; ``image_set_id``, when given
        (the key the record is filed under), is used for the record's own when equal."""
        record = object.__new__(cls)
        set_, intern, get = object.__setattr__, sys.intern, doc.get
        isid = doc["image_set_id"]
        set_(record, "image_set_id", image_set_id if image_set_id == isid else isid)
        set_(record, "datastore_id", intern(doc["datastore_id"]))
        set_(record, "version_before", intern(doc["version_before"]))
        set_(record, "version_after", _interned(doc["version_after"]))
        set_(record, "spec_digest", intern(doc["spec_digest"]))
        set_(record, "hashes", interned_keys(doc["hashes"]))
        set_(record, "applied_at", intern(doc["applied_at"]))
        set_(record, "last_operation", intern(doc["last_operation"]))
        set_(record, "last_checked_at", _interned(doc["last_checked_at"]))
        set_(record, "serial", doc["serial"])
        set_(record, "version_origin", _interned(get("version_origin")))
        set_(record, "peer_of", get("peer_of"))
        return record


_FIELDS = tuple(f.name for f in fields(ImageSetRecord))     # fields() builds them each call


def interned_keys(hashes: Mapping[str, str]) -> dict[str, str]:
    """A record's hashes with their paths interned: the paths a spec manages repeat in every
    record of its image sets (100,000 records of a table hold one ``Study.AccessionNumber``,
    not 100,000)."""
    return {sys.intern(path): value for path, value in hashes.items()}


def _interned(value: str | None) -> str | None:
    return value if value is None else sys.intern(value)


# The fields whose strings many records share (interned).
_INTERNED = ("datastore_id", "version_before", "version_after", "spec_digest", "applied_at",
             "last_operation", "last_checked_at", "version_origin")


def interned(record: ImageSetRecord) -> dict[str, str]:
    """The fields of ``record`` that many records share, interned (for ``replace``): a
    record put by apply holds one copy of its data store id, spec digest, time …, not its own."""
    return {name: sys.intern(value) for name in _INTERNED
            if type(value := getattr(record, name)) is str}


@dataclass(frozen=True)
class Refusal:
    """HealthImaging refused one exact request for one (spec, image set): it ended
    ``UPDATE_FAILED``, or was answered 400 ValidationException, on ``version``. ``request`` is
    :meth:`State.hash_value` of the request's canonical JSON (the request holds values), so the
    next plan can tell the very same request from a new one without keeping it. The service's
    message is not kept: it may quote values."""

    request: str
    version: str
    kind: str                      # UPDATE_FAILED | ValidationException
    at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Refusal:
        return cls(**doc)


@dataclass(frozen=True)
class DriftCheckpoint:
    """What one ``drift`` established for one data store (see ``reconciler.engine.drift``).

    ``through``: a time the *service* reported during that check (the newest ``updatedAt``
    SearchImageSets listed), UTC ISO 8601 with microseconds. Every record with ``serial`` up to
    ``records_serial`` was checked then and found in sync, except the image sets in
    ``unsettled`` (drifted, changed elsewhere or missing: re-checked every time). A later check
    need only list the image sets updated since ``through`` (less an overlap margin).
    ``checked_at`` / ``full_check_at``: when (this machine's clock) that check, and the last
    check that listed every image set, ran."""

    through: str
    records_serial: int
    checked_at: str
    full_check_at: str
    unsettled: tuple[str, ...] = ()

    def covers(self, record: ImageSetRecord) -> bool:
        """Whether ``record`` was checked by this checkpoint's check and found in sync."""
        return record.serial <= self.records_serial and record.image_set_id not in self.unsettled

    def to_dict(self) -> dict[str, Any]:
        return {"through": self.through, "records_serial": self.records_serial,
                "checked_at": self.checked_at, "full_check_at": self.full_check_at,
                "unsettled": list(self.unsettled)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DriftCheckpoint:
        return cls(through=doc["through"], records_serial=doc["records_serial"],
                   checked_at=doc["checked_at"], full_check_at=doc["full_check_at"],
                   unsettled=tuple(doc.get("unsettled", ())))
