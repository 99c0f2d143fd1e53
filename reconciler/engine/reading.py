"""Listings and reads: how the engine finds image sets and reads them at one version.

Plan, apply, drift and study updates all find image sets through SearchImageSets and read
them pinned to a version; this module is the one home of both:

* :func:`resolve_targets`: each spec's target → the image sets it manages (explicit ids as
  they are; selectors through SearchImageSets, every page);
* :func:`read_pinned`: the latest version that is not LOCKED, and its metadata read *by that
  version*; :func:`read_listed`: the version a search listed, without a ``GetImageSet``;
* :func:`list_versions`: the versions a listing shows, paged with a budget (drift, and plans
  that trust the state);
* :func:`study_key`: the name a study goes by in plans, files and messages (a hash, not PHI).

The search index may lag behind writes (docs/service-notes.md): a listing is evidence of a
version, never proof that nothing changed since.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Callable

from ..core import errors
from ..core.pools import bounded
from ..healthimaging import waits
from ..healthimaging.api import ACTIVE, DELETED, HealthImaging, ImageSet, ImageSetSummary
from ..spec.types import Spec

# Selector keys in the order we prefer to send them to SearchImageSets (the API takes at most
# two filters); the rest are checked on each result's DICOMTags.
SELECTOR_PRIORITY = ("DICOMStudyInstanceUID", "DICOMSeriesInstanceUID", "DICOMAccessionNumber",
                     "DICOMPatientId", "DICOMStudyId", "isPrimary")
MAX_SEARCH_FILTERS = 2


@dataclass(frozen=True)
class Assignment:
    spec: Spec
    datastore_id: str
    image_set_id: str
    listed: ImageSetSummary | None = None   # what SearchImageSets showed of it (selectors)


NO_TAGS: Mapping[str, Any] = MappingProxyType({})   # one read-only empty map for them all


def _summary_matches(summary, key: str, value: Any) -> bool:
    if key == "isPrimary":
        return summary.is_primary == value
    return summary.dicom_tags.get(key) == value


def resolve_targets(specs: list[Spec], hi: HealthImaging, default_datastore: str | None,
                    parallelism: int = 1) -> list[Assignment]:
    """Explicit ids as they are; selectors through SearchImageSets (every page), up to
    ``parallelism`` searches at a time (a table of 100,000 rows is 100,000 searches). The
    result, and which error is raised first, are in spec order whatever the parallelism."""
    targets: list[tuple[Spec, str]] = []
    for spec in specs:
        datastore = spec.target.datastore_id or default_datastore
        if not datastore:
            raise errors.ConfigError(
                f"{spec.position.file}:{spec.position.line}: spec {spec.name} has no "
                f"target.datastoreId and reconciler.yaml sets no datastoreId")
        targets.append((spec, datastore))

    def search(target: tuple[Spec, str]) -> list[Assignment] | Exception:
        try:
            return _resolve_one(*target, hi)
        except errors.ReconcilerError as exc:
            return exc

    assignments: list[Assignment] = []
    if parallelism > 1 and len(targets) > 1:
        pool = ThreadPoolExecutor(max_workers=parallelism)
        results = bounded(pool, search, targets, window=4 * parallelism)
    else:
        pool, results = None, map(search, targets)
    try:
        for result in results:
            if isinstance(result, Exception):
                raise result
            assignments += result
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return assignments


def _resolve_one(spec: Spec, datastore: str, hi: HealthImaging) -> list[Assignment]:
    if spec.target.image_set_id:
        return [Assignment(spec, datastore, spec.target.image_set_id)]
    selector = dict(spec.target.selector or {})
    keys = sorted(selector, key=lambda k: SELECTOR_PRIORITY.index(k)
                  if k in SELECTOR_PRIORITY else len(SELECTOR_PRIORITY))
    sent, checked = keys[:MAX_SEARCH_FILTERS], keys[MAX_SEARCH_FILTERS:]
    filters = [{"operator": "EQUAL", "values": [{k: selector[k]}]} for k in sent]
    try:
        found = {s.image_set_id: s for s in hi.search_image_sets(datastore, filters=filters)
                 if all(_summary_matches(s, k, selector[k]) for k in checked)}
    except errors.ServiceError as exc:
        raise errors.about(exc, f"spec {spec.name}: selector search in data store "
                                f"{datastore}") from None
    if not found and not spec.target.allow_empty:
        raise errors.ReconcilerError(
            f"{spec.position.file}:{spec.position.line}: spec {spec.name}: the selector "
            f"matched no image set in data store {datastore} (set allowEmpty: true if "
            f"that is expected)")
    # The listing is kept for its version and times; its DICOMTags served the match above and
    # are dropped (~1.5 KB an image set, held through the whole plan).
    return [Assignment(spec, datastore, image_set_id,
                       replace(found[image_set_id], dicom_tags=NO_TAGS))
            for image_set_id in sorted(found)]


def read_listed(hi: HealthImaging, assignment: Assignment,
                options: Waiting) -> tuple[ImageSet, dict[str, Any]]:
    """The metadata of the version SearchImageSets listed, without a ``GetImageSet`` (one read
    fewer per selector target). Listing and metadata belong to one version, so the diff and
    ``latestVersionId`` still match; had the image set moved on since the search, apply's
    ``latestVersionId`` check refuses the write and the change is re-read (or found stale
    under a saved plan). A version being updated (the read answers 409) goes the long way,
    through :func:`read_pinned`, which waits for it."""
    listed = assignment.listed
    if listed is None:
        return read_pinned(hi, assignment.datastore_id, assignment.image_set_id, options)
    try:
        metadata = hi.get_metadata(assignment.datastore_id, assignment.image_set_id,
                                   listed.version)
    except errors.ConflictError:
        return read_pinned(hi, assignment.datastore_id, assignment.image_set_id, options)
    image_set = ImageSet(datastore_id=assignment.datastore_id,
                         image_set_id=assignment.image_set_id, version_id=listed.version,
                         state=ACTIVE, created_at=listed.created_at,
                         updated_at=listed.updated_at, is_primary=listed.is_primary)
    return image_set, metadata


def moved_since_listed(hi: HealthImaging, assignment: Assignment, image_set: ImageSet) -> bool:
    """An empty diff at the version a search listed says "nothing changed" on the word of
    the search index, which may lag: one ``GetImageSet`` confirms that version is still the
    latest (True: it is not, read the image set the long way). A non-empty diff needs no
    confirmation: apply's ``latestVersionId`` check refuses a write to a moved image set."""
    try:
        latest = hi.get_image_set(assignment.datastore_id, assignment.image_set_id)
    except errors.NotFoundError:
        return True
    except errors.ServiceError as exc:
        raise errors.about(exc, f"image set {assignment.image_set_id} "
                                f"(spec {assignment.spec.name})") from None
    return latest.version_id != image_set.version_id or latest.locked


@dataclass(frozen=True)
class Waiting:
    """How long a read waits for a LOCKED image set, and how often it looks again."""

    lock_wait: float = 300.0
    poll_interval: float = 1.0
    sleep: Callable[[float], None] = time.sleep


def read_pinned(hi: HealthImaging, datastore_id: str, image_set_id: str,
                options: Waiting) -> tuple[ImageSet, dict[str, Any]]:
    """The latest version that is not LOCKED, and its metadata read *by that version*. A
    DELETED image set has no metadata to read (the service may answer 409 or 404 for it):
    it comes back with an empty document, and the callers report it missing."""
    deadline = time.monotonic() + options.lock_wait
    while True:
        image_set = waits.settle(hi, datastore_id, image_set_id, deadline=deadline,
                                 interval=options.poll_interval, sleep=options.sleep,
                                 transient=waits.WHILE_READING)
        if image_set is None:
            raise errors.ConflictError(
                f"image set {image_set_id} stayed LOCKED for more than {options.lock_wait:.0f}s",
                operation="GetImageSet")
        if image_set.state == DELETED:
            return image_set, {}
        try:
            return image_set, hi.get_metadata(datastore_id, image_set_id, image_set.version_id)
        except errors.ConflictError:
            continue  # locked again between the two reads: wait again


@dataclass
class Listing:
    """What SearchImageSets showed of one data store: image set id → version for the wanted
    ones, the newest ``updatedAt`` of any item, and whether the listing reached ``since`` (or
    its end) instead of stopping at the page budget."""

    versions: dict[str, str] = field(default_factory=dict)
    newest: datetime | None = None
    complete: bool = False
    pages: int = 0


def aware(moment: datetime | None) -> datetime | None:
    """Service times are timezone-aware (botocore's); a naive one is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def list_versions(hi: HealthImaging, datastore_id: str, wanted: set[str],
                  since: datetime | None = None) -> Listing:
    """SearchImageSets, 50 a page, most recently updated first. Pages until every wanted image
    set was seen, or (``since`` given) until an item updated before ``since``, or the listing
    has cost about as much as reading the wanted ones one by one would (a data store full of
    image sets we do not manage): an untouched fleet of N image sets costs about N/50 calls
    in full, about one call incrementally."""
    budget = max(1, len(wanted) // 25 + 1)   # pages
    listing = Listing()
    count = 0
    for count, summary in enumerate(hi.search_image_sets(
            datastore_id, sort={"sortField": "updatedAt", "sortOrder": "DESC"}), start=1):
        listing.pages = (count + 49) // 50
        updated = aware(summary.updated_at)
        if updated is not None:
            listing.newest = updated if listing.newest is None else max(listing.newest, updated)
            if since is not None and updated < since:
                listing.complete = True
                return listing
        if summary.image_set_id in wanted:
            listing.versions[summary.image_set_id] = summary.version
            if len(listing.versions) == len(wanted):
                listing.complete = True
                return listing
        if count % 50 == 0 and listing.pages >= budget:
            return listing
    listing.complete = True        # the listing ended
    listing.pages = max(1, listing.pages)
    return listing


def listed_versions(hi: HealthImaging, datastore_id: str, wanted: set[str]) -> dict[str, str]:
    """Image set id → version, as a full listing shows them (see :func:`list_versions`)."""
    return list_versions(hi, datastore_id, wanted).versions


def study_key(study_uid: str) -> str:
    """A file and spec name for a study that is not PHI: the StudyInstanceUID is itself in the
    PS3.15 profile, so names carry a short hash of it (stable, so a re-import finds the same
    file), never a patient name, id or accession number."""
    return "study-" + hashlib.sha256(study_uid.encode("utf-8")).hexdigest()[:12]
