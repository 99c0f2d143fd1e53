"""drift: compare what our last apply recorded with what is live now (docs/drift.md).

For every image set in the state: ``GetImageSet``; when the version is still the one our
apply (or rollback) made, the image set is **in-sync** without reading its metadata. When it
moved on, its metadata is read and each managed attribute's live value is hashed with the
state's keys and compared with the recorded hash (the state names Series and SOP Instance UIDs
by keyed tokens: :func:`recorded_paths` finds them among the UIDs of the live document and of
the specs): attributes that differ are **drifted**
(unless an ignore rule of ``reconciler.yaml`` covers them: **ignored**); none differing means
**changed-elsewhere** (someone changed what we do not manage). A deleted or vanished image set
is **missing**. Specs with no record in the state are **not-applied**.

Drift is kept apart from changes (Terraform's state-vs-live): it says what happened behind
our back, not what plan would do now.

**Incremental checks.** A check ends with a :class:`~reconciler.states.DriftCheckpoint` per data
store, which the command line saves in the state: ``through``, the newest ``updatedAt`` the
listing showed (a service time, never this machine's clock); the records the
check covered (by serial); and the image sets that were not in sync. The next check lists
``SearchImageSets`` by ``updatedAt`` descending only down to ``through − overlap`` (the overlap,
``drift.overlapSeconds``, default 300, absorbs search-index lag, updates in flight and clock
skew: it must exceed the longest lag expected): an image set it lists is checked as
above; a record the checkpoint covers and the listing does not show was not updated since, so it
is in sync without a call; unsettled image sets and records written since the checkpoint are
checked one by one. An untouched fleet then costs about one call. What an incremental listing
cannot see is a **deleted** image set (the search no longer lists it): the named choice here is
*periodic full check* — a check lists everything again when the last full one is older than
``full_after`` (``drift.fullCheckAfterHours``, default 24) and with ``drift --full``.

**Index lag.** An image set the listing shows at the version our apply made is in sync without
a call; so is one a checkpoint covers. Both rest on the search index, which may lag: a change
younger than the lag is not seen yet. The report says how many image sets were judged that way
(``check.from_listing``, ``check.index_lag``); ``read_all`` (``drift --read-all``) confirms every
record with ``GetImageSet`` instead (exact, one call per image set).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from .. import __version__
from ..core import errors
from ..core.packed import PackedList
from ..core.pools import bounded
from ..dicom.dictionary import is_private_tag
from ..dicom.paths import parse
from ..dicom.redact import Redactor
from ..documents.types import DriftEntry, DriftReport
from ..healthimaging.api import DELETED, HealthImaging
from ..spec.types import Spec
from ..states import DriftCheckpoint, ImageSetRecord, State
from .diff import PRESENT, live_values, value_at
from .reading import Listing, list_versions

IN_SYNC, DRIFTED, CHANGED_ELSEWHERE, MISSING, NOT_APPLIED, ORPHANED = (
    "in-sync", "drifted", "changed-elsewhere", "missing", "not-applied", "orphaned")
FORMAT_VERSION = "1"
DEFAULT_OVERLAP = timedelta(minutes=5)
DEFAULT_FULL_AFTER = timedelta(hours=24)
CANNOT_SEE = ("an incremental check lists only the image sets updated since the checkpoint; an "
              "image set deleted since the last full check is not listed, so it shows as in-sync "
              "until the next full check (drift --full, or drift.fullCheckAfterHours)")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def service_time(moment: datetime) -> str:
    """A time the service reported, as the checkpoint stores it: UTC with microseconds."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class DriftOptions:
    """``use_checkpoint``: list incrementally from the state's checkpoints where they allow
    (the command line; ``--full`` turns it off). Without it every data store is checked in
    full, as :func:`detect` always did. ``now`` is this machine's clock, used only to decide
    when the next full check is due and to stamp ``checked_at``."""

    use_checkpoint: bool = False
    read_all: bool = False          # every record by GetImageSet: no in-sync from a listing
    overlap: timedelta = DEFAULT_OVERLAP
    full_after: timedelta = DEFAULT_FULL_AFTER
    parallelism: int = 10
    now: Callable[[], datetime] = _utc_now
    # The specs given are the whole project: a record whose spec is not among them is
    # orphaned (the command line, unless only some spec files were named).
    complete: bool = False


@dataclass(slots=True)
class DriftItem:
    spec: str
    datastore_id: str | None
    image_set_id: str | None
    status: str
    recorded_version: str | None = None
    live_version: str | None = None
    attributes: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    by_listing: bool = False         # in sync on the word of a listing (not in the report)

    def to_json(self) -> DriftEntry:
        return {"spec": self.spec, "datastore_id": self.datastore_id,
                "image_set_id": self.image_set_id, "status": self.status,
                "recorded_version": self.recorded_version, "live_version": self.live_version,
                "attributes": self.attributes, "reason": self.reason or None}


def _key_of(path: str) -> tuple[str, bool]:
    """The key a redactor judges a path's value by (a presence path stands for itself)."""
    key = parse(path).key or path
    return key, is_private_tag(key)


IsIgnored = Callable[[str, str], bool]   # (spec name, managed path) → ignored by config?


def metadata_uids(metadata: dict[str, Any]) -> set[str]:
    """The Series and SOP Instance UIDs of a metadata document."""
    study = metadata.get("Study") if isinstance(metadata.get("Study"), dict) else {}
    series = study.get("Series") if isinstance(study.get("Series"), dict) else {}
    uids = set(series)
    for node in series.values():
        instances = node.get("Instances") if isinstance(node, dict) else None
        uids.update(instances if isinstance(instances, dict) else ())
    return uids


def spec_uids(specs: list[Spec]) -> frozenset[str]:
    """The Series and SOP Instance UIDs the specs name (so that a series or instance missing
    from the live document is still reported by its UID)."""
    return frozenset(uid for spec in specs for suid, series in spec.attributes.series.items()
                     for uid in (suid, *series.instances))


def recorded_paths(state: State, record: ImageSetRecord, metadata: dict[str, Any],
                   known_uids: frozenset[str] = frozenset()) -> dict[str, str]:
    """The record's stored paths → the paths to read in ``metadata`` (real UIDs where the
    document or ``known_uids`` give them; a token neither gives stays, and reads as absent)."""
    return state.resolve_paths(record, metadata_uids(metadata) | known_uids)


def check_record(hi: HealthImaging, state: State, spec: str, record: ImageSetRecord,
                 is_ignored: IsIgnored, redactor: Redactor,
                 listed: str | None = None, known_uids: frozenset[str] = frozenset()) -> DriftItem:
    """One image set. ``listed`` is the version SearchImageSets showed for it: when it is the
    version our apply made, the image set is in sync without another call. (The search index
    may lag; a lag can only show an older version, which is then read authoritatively.)"""
    item = DriftItem(spec, record.datastore_id, record.image_set_id, IN_SYNC,
                     recorded_version=record.version_after)
    if listed is not None and listed == record.version_after:
        item.live_version, item.by_listing = listed, True
        return item
    try:
        image_set = hi.get_image_set(record.datastore_id, record.image_set_id)
        item.live_version = image_set.version_id
        if image_set.state == DELETED:
            item.status, item.reason = MISSING, "image set is DELETED"
            return item
        if image_set.version_id == record.version_after:
            return item
        metadata = hi.get_metadata(record.datastore_id, record.image_set_id,
                                   image_set.version_id)
    except errors.NotFoundError:
        item.status, item.reason = MISSING, "image set not found"
        return item
    except errors.ServiceError as exc:
        raise errors.about(exc, f"image set {record.image_set_id} (spec {spec})") from None
    paths = recorded_paths(state, record, metadata, known_uids)
    live = live_values(paths.values(), metadata)
    drifted = ignored_count = 0
    for stored, path in sorted(paths.items(), key=lambda item: item[1]):
        if state.matches(record, stored, live[path]):
            continue
        key, private = _key_of(path)
        skip = is_ignored(spec, path)
        present, value, vr = value_at(path, metadata)
        shown = ("(absent)" if not present else "(present)" if value == PRESENT
                 else redactor.show(key, value, vr, private))
        item.attributes.append({"path": path, "live": shown, "ignored": skip})
        ignored_count += skip
        drifted += not skip
    del metadata  # bounded memory: not needed past the comparison
    if record.version_after is None:
        # A pending record: a run was killed around its write, before the outcome was saved.
        if drifted:
            item.status, item.attributes = NOT_APPLIED, []
            item.reason = ("an apply was interrupted before its write was confirmed; run "
                           "apply again")
        else:
            item.reason = ("the write of an interrupted apply is there; the next apply "
                           "records it")
        return item
    if drifted:
        item.status = DRIFTED
    else:
        item.status = CHANGED_ELSEWHERE
        if ignored_count:
            item.reason = f"{ignored_count} drifted attribute(s) ignored by reconciler.yaml"
    return item


@dataclass
class _DatastoreCheck:
    """How one data store is checked this time."""

    datastore_id: str
    records: list[tuple[str, ImageSetRecord]]
    checkpoint: DriftCheckpoint | None       # the one listed from (None: a full check)
    why_full: str | None = None
    since: datetime | None = None
    listing: Listing = field(default_factory=Listing)


def _plan(state: State, datastore_id: str, records: list[tuple[str, ImageSetRecord]],
          options: DriftOptions, now: datetime) -> _DatastoreCheck:
    checkpoint = state.drift_checkpoint(datastore_id) if options.use_checkpoint else None
    plan = _DatastoreCheck(datastore_id, records, None)
    if not options.use_checkpoint:
        plan.why_full = "full check requested"
    elif checkpoint is None:
        plan.why_full = "no checkpoint yet"
    elif now - parse_time(checkpoint.full_check_at) >= options.full_after:
        plan.why_full = "the last full check is older than drift.fullCheckAfterHours"
    else:
        plan.checkpoint = checkpoint
        plan.since = parse_time(checkpoint.through) - options.overlap
    return plan


def check(hi: HealthImaging, state: State, specs: list[Spec], is_ignored: IsIgnored,
          redactor: Redactor, options: DriftOptions | None = None
          ) -> tuple[DriftReport, dict[str, DriftCheckpoint]]:
    """The drift report document (``schemas/drift.v1.schema.json``) and the checkpoints this
    check establishes, per data store (to be saved with ``state.set_drift_checkpoints`` in the
    write that gets serial ``state.serial + 1``). The state itself is not changed."""
    options = options or DriftOptions()
    now = options.now()
    records = list(state.records())
    plans = [_plan(state, ds, [r for r in records if r[1].datastore_id == ds], options, now)
             for ds in sorted({r.datastore_id for _, r in records})]
    listed: dict[str, str] = {}
    for plan in plans:
        try:
            plan.listing = list_versions(hi, plan.datastore_id,
                                         {r.image_set_id for _, r in plan.records}, plan.since)
        except errors.ServiceError as exc:
            raise errors.about(exc, f"listing data store {plan.datastore_id}") from None
        listed.update(plan.listing.versions)

    if options.read_all:
        listed = {}                  # every record is confirmed with GetImageSet

    def covered(plan: _DatastoreCheck, record: ImageSetRecord) -> bool:
        return (not options.read_all and plan.checkpoint is not None and plan.listing.complete
                and record.image_set_id not in plan.listing.versions
                and plan.checkpoint.covers(record))

    by_id = {id(r): plan for plan in plans for _, r in plan.records}
    known = spec_uids(specs)
    loaded = {s.name: s for s in specs}

    def one(pair: tuple[str, ImageSetRecord]) -> DriftItem:
        spec, record = pair
        why = orphaned(spec, record, loaded, options.complete)
        if why is not None:
            # Not checked: plan lists it as removed, and apply forgets (or reverts) it.
            return DriftItem(spec, record.datastore_id, record.image_set_id, ORPHANED,
                             recorded_version=record.version_after,
                             reason=why + ": plan lists it as removed (apply forgets it, or "
                                          "reverts it per removed in reconciler.yaml)")
        if covered(by_id[id(record)], record):
            # Not updated since the checkpoint, which found it in sync: no call at all.
            return DriftItem(spec, record.datastore_id, record.image_set_id, IN_SYNC,
                             recorded_version=record.version_after, by_listing=True)
        return check_record(hi, state, spec, record, is_ignored, redactor,
                            listed.get(record.image_set_id), known)

    workers = max(1, options.parallelism)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Not pool.map: it submits every record at once, a future each (~1.5 KB an image set
        # until the check ends: 150 MB at 100,000).
        items = list(bounded(pool, one, records, window=4 * workers))
    checkpoints = _checkpoints(state, plans, items, now)
    recorded = {name for name, _ in records}
    pairs = {(name, r.image_set_id) for name, r in records}
    for spec in specs:
        if spec.name not in recorded:
            items.append(DriftItem(spec.name, spec.target.datastore_id,
                                   spec.target.image_set_id, NOT_APPLIED,
                                   reason="no apply recorded in the state"))
        elif spec.target.image_set_id and (spec.name, spec.target.image_set_id) not in pairs:
            items.append(DriftItem(spec.name, spec.target.datastore_id,
                                   spec.target.image_set_id, NOT_APPLIED,
                                   reason="the spec targets an image set with no apply "
                                          "recorded in the state"))
    return report_of(items, redactor, now, _check_section(plans, items)), checkpoints


def report_of(items: list[DriftItem], redactor: Redactor, now: datetime,
              check_section: dict[str, Any] | None = None) -> DriftReport:
    """The drift report document of ``items`` (``check`` only when a section is given: a
    targeted check of one image set, as ``watch`` makes, has none)."""
    counts = {status: sum(1 for i in items if i.status == status)
              for status in (IN_SYNC, DRIFTED, CHANGED_ELSEWHERE, MISSING, NOT_APPLIED)}
    if any(i.status == ORPHANED for i in items):   # (reports before it have no such count)
        counts[ORPHANED] = sum(1 for i in items if i.status == ORPHANED)
    report: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "reconciler_version": __version__,
        "checked_at": now.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "redacted": redactor.enabled, "summary": counts}
    if check_section is not None:
        report["check"] = check_section
    # Packed as made: 100,000 items as dicts (~0.5 KB each) were drift's peak at its end.
    report["image_sets"] = PackedList.of((i.to_json() for i in items), canonical=False)
    return report  # type: ignore[return-value]


def _checkpoints(state: State, plans: list[_DatastoreCheck], items: list[DriftItem],
                 now: datetime) -> dict[str, DriftCheckpoint]:
    out: dict[str, DriftCheckpoint] = {}
    stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds")
    for plan in plans:
        mine = [i for i in items if i.datastore_id == plan.datastore_id]
        # Only the listing's own times: the search index may lag, and an update it does not
        # show yet has an updatedAt after the newest one it does show (GetImageSet's times
        # are not comparable that way). The overlap margin covers what is not that orderly.
        times = [t for t in (plan.listing.newest,) if t is not None]
        if plan.checkpoint is not None:
            times.append(parse_time(plan.checkpoint.through))
        if not times:           # the listing showed nothing: no service time, no checkpoint
            continue
        # A full check listed or read every record. So did an incremental one whose listing
        # stopped at its page budget (it read every record it did not show): deleted image
        # sets were found either way.
        previous = plan.checkpoint
        out[plan.datastore_id] = DriftCheckpoint(
            through=service_time(max(times)), records_serial=state.serial + 1,
            checked_at=stamp,
            full_check_at=(previous.full_check_at if previous and plan.listing.complete
                           else stamp),
            unsettled=tuple(sorted({i.image_set_id for i in mine
                                    if i.status != IN_SYNC and i.image_set_id})))
    return out


def _check_section(plans: list[_DatastoreCheck], items: list[DriftItem]) -> dict[str, Any]:
    incremental = [p for p in plans if p.checkpoint is not None]
    unread = sum(1 for i in items if i.status == IN_SYNC and i.live_version is None)
    judged = sum(1 for i in items if i.by_listing)
    return {
        "from_listing": judged,
        "index_lag": (f"{judged} image set{'s' if judged != 1 else ''} judged in sync from the "
                      f"SearchImageSets listing without reading {'them' if judged != 1 else 'it'}"
                      f": a change younger than the search index's lag may not show yet; "
                      f"drift --read-all confirms every image set with GetImageSet (one call "
                      f"each)") if judged else None,
        "incremental": bool(incremental),
        "since": service_time(min(p.since for p in incremental if p.since)) if incremental else None,
        "from_checkpoint": unread,
        "cannot_see": CANNOT_SEE if incremental else None,
        "datastores": [{
            "datastore_id": p.datastore_id,
            "incremental": p.checkpoint is not None,
            "since": service_time(p.since) if p.since else None,
            "full_check_at": p.checkpoint.full_check_at if p.checkpoint else None,
            "why_full": p.why_full,
            "listed_pages": p.listing.pages,
        } for p in plans],
    }


def detect(hi: HealthImaging, state: State, specs: list[Spec], is_ignored: IsIgnored,
           redactor: Redactor, parallelism: int = 10) -> dict[str, Any]:
    """The drift report of a full check (no checkpoint read; see :func:`check`)."""
    return check(hi, state, specs, is_ignored, redactor,
                 DriftOptions(parallelism=parallelism))[0]


def describe_check(report: DriftReport) -> str | None:
    """One line for people on how an incremental check was made and what it cannot see
    (None after a full check)."""
    section = report.get("check") or {}
    if not section.get("incremental"):
        return None
    return (f"Incremental check: listed the image sets updated since {section['since']}; "
            f"{section['from_checkpoint']} in sync from the checkpoint without a call. A deleted "
            f"image set is not seen until the next full check (drift --full, or once the last "
            f"full check is older than drift.fullCheckAfterHours).")


def has_drift(report: DriftReport) -> bool:
    s = report["summary"]
    return bool(s[DRIFTED] or s[MISSING] or s.get(ORPHANED))


def orphaned(name: str, record: ImageSetRecord, specs: dict[str, Spec],
             complete: bool) -> str | None:
    """Why a record's spec no longer manages its image set, as far as drift can tell
    without a search: the spec is gone (``complete``: the specs are the whole project), or it
    targets another image set by id (a peer of a study update goes with its leader). A
    selector's results are not searched here; plan finds the image sets it no longer finds."""
    spec = specs.get(name)
    if spec is None:
        return f"spec {name} is no longer in the specs" if complete else None
    target = spec.target.image_set_id
    if target is None or target in (record.image_set_id, record.peer_of):
        return None
    return f"spec {name} now targets image set {target}"
