"""drift: compare what our last apply recorded with what is live now (product.md §6).

For every image set in the state: ``GetImageSet``; when the version is still the one our
apply (or rollback) made, the image set is **in-sync** without reading its metadata. When it
moved on, its metadata is read and each managed attribute's live value is hashed with the
state's salt and compared with the recorded hash: attributes that differ are **drifted**
(unless an ignore rule of ``reconciler.yaml`` covers them: **ignored**); none differing means
**changed-elsewhere** (someone changed what we do not manage). A deleted or vanished image set
is **missing**. Specs with no record in the state are **not-applied**.

Drift is kept apart from changes (Terraform's state-vs-live): it says what happened behind
our back, not what plan would do now.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from . import __version__, errors
from .dicom import is_private_tag
from .diff import PRESENT, live_values, resolve
from .model import Spec
from .redact import Redactor
from .service import DELETED, HealthImaging
from .states import ImageSetRecord, State

IN_SYNC, DRIFTED, CHANGED_ELSEWHERE, MISSING, NOT_APPLIED = (
    "in-sync", "drifted", "changed-elsewhere", "missing", "not-applied")
FORMAT_VERSION = "1"


@dataclass
class DriftItem:
    spec: str
    datastore_id: str | None
    image_set_id: str | None
    status: str
    recorded_version: str | None = None
    live_version: str | None = None
    attributes: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "datastore_id": self.datastore_id,
                "image_set_id": self.image_set_id, "status": self.status,
                "recorded_version": self.recorded_version, "live_version": self.live_version,
                "attributes": self.attributes, "reason": self.reason or None}


def _key_of(path: str) -> tuple[str, bool]:
    key = path.rsplit(".", 1)[-1] if not path.endswith("]") else path
    return key, is_private_tag(key)


IsIgnored = Callable[[str, str], bool]   # (spec name, managed path) → ignored by config?


def listed_versions(hi: HealthImaging, datastore_id: str, wanted: set[str]) -> dict[str, str]:
    """Image set id → version as SearchImageSets lists them (50 a page, most recently updated
    first), paging until every wanted image set was seen or the listing has cost about as much
    as reading the wanted ones one by one would (a data store full of image sets we do not
    manage): an untouched fleet of N image sets costs about N/50 calls instead of N."""
    budget = max(1, len(wanted) // 25 + 1)   # pages
    seen: dict[str, str] = {}
    pages = 0
    for count, summary in enumerate(hi.search_image_sets(
            datastore_id, sort={"sortField": "updatedAt", "sortOrder": "DESC"}), start=1):
        if summary.image_set_id in wanted:
            seen[summary.image_set_id] = summary.version
            if len(seen) == len(wanted):
                break
        pages = (count + 49) // 50
        if count % 50 == 0 and pages >= budget:
            break
    return seen


def check_record(hi: HealthImaging, state: State, spec: str, record: ImageSetRecord,
                 is_ignored: IsIgnored, redactor: Redactor,
                 listed: str | None = None) -> DriftItem:
    """One image set. ``listed`` is the version SearchImageSets showed for it: when it is the
    version our apply made, the image set is in sync without another call. (The search index
    may lag; a lag can only show an older version, which is then read authoritatively.)"""
    item = DriftItem(spec, record.datastore_id, record.image_set_id, IN_SYNC,
                     recorded_version=record.version_after)
    if listed is not None and listed == record.version_after:
        item.live_version = listed
        return item
    try:
        image_set = hi.get_image_set(record.datastore_id, record.image_set_id)
    except errors.NotFoundError:
        item.status, item.reason = MISSING, "image set not found"
        return item
    item.live_version = image_set.version_id
    if image_set.state == DELETED:
        item.status, item.reason = MISSING, "image set is DELETED"
        return item
    if image_set.version_id == record.version_after:
        return item
    metadata = hi.get_metadata(record.datastore_id, record.image_set_id, image_set.version_id)
    live = live_values(record.hashes, metadata)
    drifted = ignored_count = 0
    for path in sorted(record.hashes):
        if state.matches(record, path, live[path]):
            continue
        key, private = _key_of(path)
        skip = is_ignored(spec, path)
        present, value, vr = resolve(path, metadata)
        shown = ("(absent)" if not present else "(present)" if value == PRESENT
                 else redactor.show(key, value, vr, private))
        item.attributes.append({"path": path, "live": shown, "ignored": skip})
        ignored_count += skip
        drifted += not skip
    del metadata  # bounded memory: not needed past the comparison
    if drifted:
        item.status = DRIFTED
    else:
        item.status = CHANGED_ELSEWHERE
        if ignored_count:
            item.reason = f"{ignored_count} drifted attribute(s) ignored by reconciler.yaml"
    return item


def detect(hi: HealthImaging, state: State, specs: list[Spec], is_ignored: IsIgnored,
           redactor: Redactor, parallelism: int = 10) -> dict[str, Any]:
    """The drift report document (``schemas/drift.v1.schema.json``)."""
    records = list(state.records())
    listed: dict[str, str] = {}
    for datastore_id in sorted({r.datastore_id for _, r in records}):
        wanted = {r.image_set_id for _, r in records if r.datastore_id == datastore_id}
        listed.update(listed_versions(hi, datastore_id, wanted))
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        items = list(pool.map(
            lambda r: check_record(hi, state, r[0], r[1], is_ignored, redactor,
                                   listed.get(r[1].image_set_id)), records))
    recorded = {name for name, _ in records}
    for spec in specs:
        if spec.name not in recorded:
            items.append(DriftItem(spec.name, spec.target.datastore_id,
                                   spec.target.image_set_id, NOT_APPLIED,
                                   reason="no apply recorded in the state"))
    counts = {status: sum(1 for i in items if i.status == status)
              for status in (IN_SYNC, DRIFTED, CHANGED_ELSEWHERE, MISSING, NOT_APPLIED)}
    return {"format_version": FORMAT_VERSION, "reconciler_version": __version__,
            "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "redacted": redactor.enabled, "summary": counts,
            "image_sets": [i.to_json() for i in items]}


def has_drift(report: dict[str, Any]) -> bool:
    return bool(report["summary"][DRIFTED] or report["summary"][MISSING])
