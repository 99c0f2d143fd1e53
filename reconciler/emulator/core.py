"""The backend's core: settings, lookups, the lifecycle of asynchronous work, the Python API.

No HTTP here (moto's ``models.py`` shape): each public method is named after an operation in
snake_case, takes the operation's parsed input (member names of the botocore model) and a
:class:`Call` (region, fault directives), and returns the output members as a dict, or raises
:class:`~.protocol.ServiceError`. The HTTP layer (:mod:`responses`) only parses and
serialises.

Concurrency: one re-entrant lock serialises every operation, so each call sees and leaves a
consistent store. Asynchronous work (updates, copies, deletes, data-store creation) is not
run by timers: each in-flight version holds a due time (and a number of GetImageSet polls it
must still answer LOCKED); :meth:`_advance`, called at the start of every operation, completes
whatever has fallen due. That makes the lifecycle deterministic under a fake clock and costs
no threads. Completion timestamps are the due times, not the moment somebody looked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .behaviours import Behaviours
from .dicom_seed import SeedDocument
from .entities import (
    ACTIVE, COMPRESS_LEVEL, DELETED, LOCKED, Datastore, Document, ImageSet, Summary, Version)
from .search import Index
from .events import IMAGE_SET_EVENTS, EventLog
from .faults import Directives
from .protocol import ServiceError, validation
from .store import MemoryStore

DEFAULT_DATASTORE_NAME = "reconciler-emulator"


def conflict(message: str) -> ServiceError:
    return ServiceError("ConflictException", message)


def not_found(message: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", message)


def version_number(text: str | None) -> int | None:
    """A version id as the service writes them ("1", "2", …) → its number; anything else
    (``"01"``, ``"0"``, ``"+1"``) names no version."""
    if text is None or not text.isdigit() or text != str(int(text)) or int(text) < 1:
        return None
    return int(text)


def stable_id(*parts: str) -> str:
    """A deterministic id matching ``[0-9a-z]{32}``."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


# The first members of a seed document as a JSON writer with compact separators writes them
# (benchmarks/fleet.py, json.dumps(..., separators=(",", ":"))): SchemaVersion, DatastoreID,
# ImageSetID, then the rest.
_SEED_HEAD = re.compile(r'\{"SchemaVersion":(?:"1\.1"|1\.1),"DatastoreID":(null|"[0-9a-z]*"),'
                        r'"ImageSetID":(null|"[0-9a-z]*"),(?="(?:Patient|Study)")')


def seed_document(document: dict[str, Any], datastore_id: str, image_set_id: str,
                  text: str | None = None) -> Document:
    """Version 1 of a seeded image set: the document with its ids, keys in the service's order.

    With the seed's own JSON ``text`` in the compact form above, the stored JSON is that text
    with the ids put in, not a re-serialisation of the parsed document: it decodes to exactly
    the same document (``document`` is what ``text`` parsed to, and the rest of the text
    holds none of the three keys), and skips the costliest step of seeding 100,000 image sets.
    Any other text is serialised from ``document`` as every version is.
    """
    head = {"SchemaVersion": "1.1", "DatastoreID": datastore_id, "ImageSetID": image_set_id}
    if text is not None:
        m = _SEED_HEAD.match(text)
        rest = text[m.end():].rstrip() if m else ""
        if m and rest.endswith("}") and not any(f'"{k}"' in rest for k in head) \
                and json.loads(m.group(1)) == document.get("DatastoreID") \
                and json.loads(m.group(2)) == document.get("ImageSetID"):
            blob = gzip.compress((json.dumps(head, separators=(",", ":"))[:-1] + "," + rest)
                                 .encode(), COMPRESS_LEVEL, mtime=0)
            return Document(blob, Summary.of(document))
    content = dict(head)
    content.update((k, v) for k, v in document.items() if k not in head)
    return Document.of(content)


@dataclass
class Call:
    """Per-request context: the SigV4 region and what fault rules asked of this call."""

    region: str = "us-east-1"
    directives: Directives = field(default_factory=Directives)


@dataclass
class Settings:
    update_delay: float = 0.5
    time_scale: float = 1.0
    validation: str = "async"          # async | sync
    behaviours: Behaviours = field(default_factory=Behaviours)

    def scaled(self, seconds: float) -> float:
        return seconds / self.time_scale


class BackendCore:
    """State, lock, lookups and lifecycle shared by the operation mixins."""

    def __init__(self, settings: Settings | None = None, store: MemoryStore | None = None,
                 clock: Callable[[], float] = time.time, events: EventLog | None = None):
        self.settings = settings or Settings()
        self.store = store or MemoryStore()
        self.clock = clock
        self.events = events or EventLog()
        self.lock = threading.RLock()
        self.datastores: dict[str, Datastore] = {}
        self.image_sets: dict[str, ImageSet] = {}
        self._gzip_cache: dict[tuple[str, int, bool], bytes] = {}
        self.search_index = Index()
        # Counts every change to an image set (_save_image_set, reset): a search listing
        # computed at one count holds until the next (see ReadsMixin.search_image_sets).
        self.changes = 0
        self._listing: tuple[tuple[int, str, str], list[Any]] | None = None
        stores, sets = self.store.load()
        self.datastores.update((d.datastore_id, d) for d in stores)
        self.image_sets.update((s.image_set_id, s) for s in sets)
        for image_set in sets:
            self._index(image_set, None)
        self._pending_ids: set[str] = {s.image_set_id for s in sets if s.latest.pending}
        self.jobs: dict[str, Any] = {}
        self._load_jobs()

    def _load_jobs(self) -> None:
        from .imports import TERMINAL, ImportJob

        for record in self.store.load_jobs():
            job = ImportJob(**record)
            if job.jobStatus not in TERMINAL:     # its thread died with the old process
                job.jobStatus, job.endedAt = "FAILED", self.clock()
                job.message = "The emulator stopped while the job was running"
                self.store.save_job(job)
            self.jobs[job.jobId] = job

    def _index(self, image_set: ImageSet, versions: list[Version] | None) -> None:
        for version in image_set.versions if versions is None else versions:
            self.search_index.add(image_set.image_set_id, version.document.summary)

    def study_image_sets(self, datastore_id: str, study_uid: Any) -> list[ImageSet]:
        """The live primary image sets of one study in one data store, oldest first: through
        the search index (every image set that ever held the StudyInstanceUID), then checked
        against the latest version, not a scan of every image set per write."""
        if isinstance(study_uid, str):
            ids = self.search_index.candidates(
                [("DICOMStudyInstanceUID", "EQUAL", [study_uid])]) or set()
            found: Iterable[ImageSet | None] = (self.image_sets.get(i) for i in ids)
        else:                   # a malformed UID the index does not key: look at every one
            found = self.image_sets.values()
        return sorted((s for s in found
                       if s is not None and s.datastore_id == datastore_id and s.is_primary
                       and not s.deleted
                       and s.latest.document.summary.study.get("StudyInstanceUID") == study_uid),
                      key=lambda s: (s.created_at, s.image_set_id))

    def _save_image_set(self, image_set: ImageSet, versions: list[Version] | None = None) -> None:
        """Persist (the store) and index (search) what changed: every change to an image set
        ends here, with the versions whose content it wrote (default: all of them)."""
        self._index(image_set, versions)
        self.changes += 1
        self.store.save_image_set(image_set, versions)

    @property
    def behaviours(self) -> Behaviours:
        return self.settings.behaviours

    # ---------------------------------------------------------------------- lifecycle
    def _advance(self) -> None:
        """Complete every pending piece of work that has fallen due (see module docstring)."""
        now = self.clock()
        for ds in self.datastores.values():
            if ds.pending and ds.pending["due_at"] <= now:
                ds.status, ds.updated_at, ds.pending = ds.pending["status"], ds.pending["due_at"], None
                self.store.save_datastore(ds)
                self.events.datastore(ds.datastore_id, ds.name, ds.status, ds.updated_at)
        if not self._pending_ids:
            return
        waiting = [(s, s.latest) for s in map(self.image_sets.get, sorted(self._pending_ids))
                   if s is not None and s.latest.pending]
        blocked_groups = {v.group for _, v in waiting
                          if v.group and not self._ready(v, now)}
        for image_set, version in waiting:
            if self._ready(version, now) and version.group not in blocked_groups:
                self._complete(image_set, version)

    @staticmethod
    def _ready(version: Version, now: float) -> bool:
        pending = version.pending or {}
        return pending.get("due_at", 0) <= now and pending.get("polls", 0) <= 0

    def _complete(self, image_set: ImageSet, version: Version) -> None:
        pending = version.pending or {}
        if pending.get("metadata") is not None:
            version.metadata = pending["metadata"]
        version.state = pending["state"]
        version.status = pending["status"]
        version.message = pending.get("message")
        version.updated_at = pending["due_at"]
        if pending.get("deleted"):
            version.deleted_at = pending["due_at"]
        version.pending = None
        self._pending_ids.discard(image_set.image_set_id)
        for other_id in pending.get("demote") or ():        # promoteToPrimary took over
            other = self.image_sets.get(other_id)
            if other is not None:
                other.is_primary = False
                self._save_image_set(other, [])
        self._save_image_set(image_set, [version])
        if not pending.get("quiet") and version.status in IMAGE_SET_EVENTS:
            self._image_set_event(image_set, version)

    def _image_set_event(self, image_set: ImageSet, version: Version, **extra: Any) -> None:
        """The EventBridge event of the version's current state and workflow status."""
        self.events.image_set(image_set.datastore_id, image_set.image_set_id,
                              version.version_id, image_set.is_primary, version.state,
                              version.status, version.updated_at, **extra)

    def tick(self) -> None:
        """Complete due work now (the background ticker calls this so that completion events
        go out without a client polling)."""
        with self.lock:
            self._advance()

    def _track(self, image_set: ImageSet) -> None:
        """Remember that the image set's latest version has pending work (keeps _advance O(k))."""
        self._pending_ids.add(image_set.image_set_id)

    def _schedule(self, image_set: ImageSet, version: Version, state: str, status: str,
                  call: Call, **extra: Any) -> None:
        d = call.directives
        delay = self.settings.scaled(self.settings.update_delay + d.lock_seconds)
        version.pending = dict(extra, state=state, status=status,
                               due_at=self.clock() + delay, polls=d.lock_polls)
        self._track(image_set)

    # ------------------------------------------------------------------------ lookups
    def _datastore(self, datastore_id: str, for_image_sets: bool = True) -> Datastore:
        ds = self.datastores.get(datastore_id)
        if ds is None or (for_image_sets and ds.status == "DELETED"):
            raise not_found(f"Datastore {datastore_id} does not exist")
        return ds

    def _image_set(self, datastore_id: str, image_set_id: str) -> ImageSet:
        self._datastore(datastore_id)
        image_set = self.image_sets.get(image_set_id)
        if image_set is None or image_set.datastore_id != datastore_id:
            raise not_found(f"Image set {image_set_id} does not exist in datastore "
                            f"{datastore_id}")
        return image_set

    def _version(self, image_set: ImageSet, version_id: str | None) -> Version:
        if version_id is None:
            return image_set.latest
        number = version_number(version_id)
        version = image_set.version(number) if number else None
        if version is None:
            raise not_found(f"Version {version_id} of image set {image_set.image_set_id} "
                            f"does not exist")
        return version

    def _check_writable(self, image_set: ImageSet, latest_version_id: str | None) -> None:
        """The optimistic-concurrency and lock checks every image-set write starts with."""
        latest = image_set.latest
        if latest.state == DELETED or latest.status == "DELETING":
            raise conflict(f"Image set {image_set.image_set_id} is deleted")
        if latest.state == LOCKED:
            error = conflict if self.behaviours.locked_write_error == "conflict" else validation
            raise error(f"Image set {image_set.image_set_id} is locked by an operation in "
                        f"progress ({latest.status})")
        if latest_version_id is not None and version_number(latest_version_id) \
                != latest.version_id:
            error = conflict if self.behaviours.stale_version_error == "conflict" else validation
            raise error(f"latestVersionId {latest_version_id} is not the latest version of "
                        f"image set {image_set.image_set_id} ({latest.version_id})")

    def _new_version(self, image_set: ImageSet, metadata: dict[str, Any] | Document,
                     state: str, status: str, forced: bool = False) -> Version:
        now = self.clock()
        version = Version(len(image_set.versions) + 1, metadata, state, status,
                          created_at=image_set.created_at, updated_at=now, forced=forced)
        image_set.versions.append(version)
        return version

    # --------------------------------------------------------------- direct (Python) API
    def default_datastore(self) -> Datastore:
        return self.ensure_datastore(DEFAULT_DATASTORE_NAME)

    def ensure_datastore(self, name: str) -> Datastore:
        """The data store with this deterministic name-derived id, created when missing."""
        with self.lock:
            datastore_id = stable_id("datastore", name)
            ds = self.datastores.get(datastore_id)
            if ds is None:
                now = self.clock()
                ds = Datastore(datastore_id, name, ACTIVE, now, now)
                self.datastores[datastore_id] = ds
                self.store.save_datastore(ds)
            return ds

    def add_image_set(self, datastore_id: str, document: dict[str, Any],
                      image_set_id: str | None = None, is_primary: bool = True,
                      status: str = "IMPORTED", text: str | None = None) -> ImageSet:
        """Create an image set (version 1, ``ACTIVE``) from a metadata document.

        Existing ids are left untouched (seeding is idempotent across restarts). It stands
        for data imported long ago: version 1 is searchable at once, whatever
        ``search_index_lag`` (an import job's new image sets lag like any other write).
        """
        with self.lock:
            ds = self._datastore(datastore_id)
            study_uid = str(document["Study"]["DICOM"]["StudyInstanceUID"])
            image_set_id = image_set_id or stable_id(ds.name, study_uid)
            if image_set_id in self.image_sets:
                return self.image_sets[image_set_id]
            now = self.clock()
            image_set = ImageSet(image_set_id, datastore_id, now, is_primary)
            content = seed_document(document, datastore_id, image_set_id, text)
            image_set.versions.append(Version(1, content, ACTIVE, status, now, now,
                                              indexed=True))
            self.image_sets[image_set_id] = image_set
            self._save_image_set(image_set)
            return image_set

    def seed(self, seeds: Iterable[SeedDocument], datastore_id: str | None = None
             ) -> list[ImageSet]:
        ds_id = datastore_id or self.default_datastore().datastore_id
        primary = self.behaviours.seed_primary == "true"
        return [self.add_image_set(ds_id, s.document, s.image_set_id, is_primary=primary,
                                   text=s.text)
                for s in seeds]

    def metadata(self, image_set_id: str, version: int | None = None) -> dict[str, Any]:
        """A copy of a version's metadata document (default: the latest)."""
        with self.lock:
            self._advance()
            image_set = self.image_sets[image_set_id]
            chosen = image_set.version(version) if version else image_set.latest
            return chosen.metadata                  # decoded afresh on every read

    def complete_pending(self) -> None:
        """Finish all in-flight work now, whatever its due time (for tests)."""
        with self.lock:
            for image_set in self.image_sets.values():
                if image_set.latest.pending:
                    image_set.latest.pending["due_at"] = min(image_set.latest.pending["due_at"],
                                                             self.clock())
                    image_set.latest.pending["polls"] = 0
            self._advance()

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def reset(self) -> None:
        with self.lock:
            self.datastores.clear()
            self.image_sets.clear()
            self._pending_ids.clear()
            self._gzip_cache.clear()
            self.search_index.clear()
            self.changes += 1
            self.jobs.clear()
            self.events.clear()
            self.store.clear()
