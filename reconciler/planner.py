"""plan: resolve targets, read each image set pinned to one version, diff, build requests.

For every targeted image set (docs/plan-and-apply.md):

1. ``GetImageSet`` → the latest version and its state; a LOCKED image set is waited on
   (bounded) and read again. Image sets found by a selector skip this call: the search
   already listed their version (:func:`read_listed`);
2. ``GetImageSetMetadata(version)`` → the document the diff is made against, so the diff and
   the version sent as ``latestVersionId`` always match;
3. the DICOM-aware diff of the declared attributes only;
4. one request carrying every change (split only when a document exceeds the blob limit).

Reads run in parallel (``parallelism``), paced by the client's per-operation pacer. Each
metadata document is dropped as soon as its diff is made. The result is a plan *document*
(:mod:`reconciler.plans`); nothing here prints.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import errors, grouping, plans, waits
from .canonical import digest
from .config import PrimaryPolicy
from .diff import Change, ImageSetProblem, diff
from .model import Spec
from .payloads import (SCHEMA_VERSION, PayloadTooLarge, Request, build_requests,
                       schema_version_of)
from .progress import Progress
from .redact import Redactor
from .service import ACTIVE, DELETED, HealthImaging, ImageSet, ImageSetSummary

log = logging.getLogger(__name__)

# Selector keys in the order we prefer to send them to SearchImageSets (the API takes at most
# two filters); the rest are checked on each result's DICOMTags.
SELECTOR_PRIORITY = ("DICOMStudyInstanceUID", "DICOMSeriesInstanceUID", "DICOMAccessionNumber",
                     "DICOMPatientId", "DICOMStudyId", "isPrimary")
MAX_SEARCH_FILTERS = 2


@dataclass
class PlanOptions:
    targets: list[str] = field(default_factory=list)    # spec-name globs to include
    excludes: list[str] = field(default_factory=list)   # spec-name globs to leave out
    parallelism: int = 10
    lock_wait: float = 300.0        # seconds to wait for a LOCKED image set
    poll_interval: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    progress: bool | None = None    # None: on when stderr is a terminal
    trust_state: bool = True        # skip reading image sets the state shows unchanged
    primary: PrimaryPolicy = field(default_factory=PrimaryPolicy)   # grouping.py


@dataclass(frozen=True)
class Assignment:
    spec: Spec
    datastore_id: str
    image_set_id: str
    listed: ImageSetSummary | None = None   # what SearchImageSets showed of it (selectors)


def select_specs(specs: list[Spec], options: PlanOptions) -> list[Spec]:
    chosen = [s for s in specs
              if (not options.targets or any(fnmatch.fnmatchcase(s.name, g) for g in options.targets))
              and not any(fnmatch.fnmatchcase(s.name, g) for g in options.excludes)]
    if options.targets and not chosen:
        raise errors.UsageError("--target matched no spec: " + ", ".join(options.targets))
    return chosen


def _summary_matches(summary, key: str, value: Any) -> bool:
    if key == "isPrimary":
        return summary.is_primary == value
    return summary.dicom_tags.get(key) == value


def resolve(specs: list[Spec], hi: HealthImaging,
            default_datastore: str | None) -> list[Assignment]:
    """Explicit ids as they are; selectors through SearchImageSets (every page)."""
    assignments: list[Assignment] = []
    for spec in specs:
        datastore = spec.target.datastore_id or default_datastore
        if not datastore:
            raise errors.ConfigError(
                f"{spec.position.file}:{spec.position.line}: spec {spec.name} has no "
                f"target.datastoreId and reconciler.yaml sets no datastoreId")
        if spec.target.image_set_id:
            assignments.append(Assignment(spec, datastore, spec.target.image_set_id))
            continue
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
        for image_set_id in sorted(found):
            assignments.append(Assignment(spec, datastore, image_set_id, found[image_set_id]))
    return assignments


def read_listed(hi: HealthImaging, assignment: Assignment,
                options: PlanOptions) -> tuple[ImageSet, dict[str, Any]]:
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


def _moved_since_listed(hi: HealthImaging, assignment: Assignment, image_set: ImageSet) -> bool:
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


def read_pinned(hi: HealthImaging, datastore_id: str, image_set_id: str,
                options: PlanOptions) -> tuple[ImageSet, dict[str, Any]]:
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


def before_digest(changes: list[Change]) -> str:
    return digest([[c.path, c.before] for c in changes])


def change_entry(change: Change, redactor: Redactor) -> dict[str, Any]:
    return {"op": change.op, "level": change.level, "key": change.key, "vr": change.vr,
            "series": change.series, "instance": change.instance, "private": change.private,
            "before": redactor.show(change.key, change.before, change.vr, change.private),
            "after": redactor.show(change.key, change.after, change.vr, change.private)}


def plan_entry(assignment: Assignment, version_id: str | None, changes: list[Change],
               redactor: Redactor, error: str | None = None,
               schema_version: Any = SCHEMA_VERSION, primary: bool = False) -> dict[str, Any]:
    """``schema_version``: the SchemaVersion of the document the diff was made against, which
    the payloads repeat (see :mod:`reconciler.payloads`). ``primary``: the image set is a
    primary one, whose Patient/Study changes a study update carries (:mod:`grouping`), so its
    own requests never go study-wide."""
    spec = assignment.spec
    requests = [] if error else build_requests(
        changes, force=spec.force,
        include_study_image_sets=spec.include_study_image_sets and not primary,
        schema_version=schema_version)
    return {
        "spec": spec.name, "spec_digest": spec.digest,
        "datastore_id": assignment.datastore_id, "image_set_id": assignment.image_set_id,
        "version_id": version_id,
        "action": plans.ACTION_ERROR if error else
        (plans.ACTION_UPDATE if changes else plans.ACTION_NOOP),
        "force": bool(spec.force and any(r.force for r in requests)),
        "include_study_image_sets": spec.include_study_image_sets and not primary,
        "state_serial": None,  # filled in by plan_one from the state
        "changes": [change_entry(c, redactor) for c in changes],
        "before_digest": before_digest(changes) if changes else None,
        "requests": [r.to_json() for r in requests],
        "error": error,
    }


StateSerial = Callable[[str, str], "int | None"]  # (spec, image set) → serial of its record


def plan_one(hi: HealthImaging, assignment: Assignment, redactor: Redactor,
             options: PlanOptions, state_serial: StateSerial | None = None,
             studies: grouping.StudyIndex | None = None) -> dict[str, Any]:
    serial = state_serial(assignment.spec.name, assignment.image_set_id) if state_serial else None
    entry = _plan_one(hi, assignment, redactor, options, studies)
    entry["state_serial"] = serial
    return entry


def _plan_one(hi: HealthImaging, assignment: Assignment, redactor: Redactor,
              options: PlanOptions, studies: grouping.StudyIndex | None = None) -> dict[str, Any]:
    image_set_id = assignment.image_set_id
    try:
        image_set, metadata = read_listed(hi, assignment, options)
        from_listing = (assignment.listed is not None
                        and image_set.version_id == assignment.listed.version)
    except errors.NotFoundError:
        return plan_entry(assignment, None, [], redactor,
                          error=f"image set {image_set_id} not found (missing)")
    except errors.ServiceError as exc:
        raise errors.about(exc, f"image set {image_set_id} (spec {assignment.spec.name})") from None
    if image_set.state == DELETED:
        return plan_entry(assignment, image_set.version_id, [], redactor,
                          error=f"image set {image_set_id} is DELETED (missing)")
    if studies is not None:
        studies.note(image_set, metadata)
    schema_version = schema_version_of(metadata)
    try:
        changes = diff(assignment.spec.attributes, metadata, image_set_id)
    except ImageSetProblem as exc:
        return plan_entry(assignment, image_set.version_id, [], redactor, error=str(exc))
    finally:
        del metadata  # bounded memory: the document is not needed past its diff
    if not changes and from_listing and _moved_since_listed(hi, assignment, image_set):
        return _plan_one(hi, replace(assignment, listed=None), redactor, options, studies)
    deferred: list[Change] = []
    if image_set.is_primary and changes:
        refusal = grouping.primary_refusal(changes, options.primary)
        if refusal is not None:
            return plan_entry(assignment, image_set.version_id, [], redactor,
                              error=f"image set {image_set_id} is a primary image set: {refusal}")
        if studies is not None:
            deferred, changes = grouping.split(changes, options.primary)
            if deferred:
                studies.defer(assignment.spec, image_set_id, deferred, changes)
    try:
        return plan_entry(assignment, image_set.version_id, changes, redactor,
                          schema_version=schema_version, primary=bool(image_set.is_primary))
    except PayloadTooLarge as exc:
        return plan_entry(assignment, image_set.version_id, [], redactor, error=str(exc))


Refused = Callable[[str, str, str], Any]
"""(spec name, image set id, canonical request) → the refusal the state remembers of this very
request (:class:`reconciler.states.Refusal`), or None."""


def _refusal_note(refusal: Any) -> str:
    return (f"cannot converge: HealthImaging refused this very request ({refusal.kind}, "
            f"version {refusal.version}, {refusal.at}) and would refuse it again. If the image "
            f"set is primary, the account's service may forbid the change on primary image sets "
            f"(primaryImageSets in reconciler.yaml; docs/primary-image-sets.md): {grouping.WAY_OUT}. "
            f"Changing the spec plans anew; plan --retry-refused sends it again")


def cannot_converge(entries: list[dict[str, Any]], groups: list[dict[str, Any]],
                    refused: Refused) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Entries and study updates whose very request the service refused before become errors
    that say so, instead of proposing the doomed request again (a study update: an error for
    each of its members' specs)."""
    for entry in entries:
        found = next((r for r in (refused(entry["spec"], entry["image_set_id"],
                                          Request.from_json(q).canonical())
                                  for q in entry["requests"]) if r is not None), None)
        if found is not None:
            grouping.refuse_entry(entry, _refusal_note(found))
    kept = []
    for group in groups:
        request = Request.from_json(group["requests"][0]).canonical()
        found = next((r for m in group["members"]
                      if (r := refused(m["spec"], m["image_set_id"], request)) is not None), None)
        if found is None:
            kept.append(group)
            continue
        # The members' own changes that were to follow it are not planned either: the error
        # of each member (one per spec and image set) says why.
        entries = [e for e in entries if e.get("after_study") != group["study"]]
        entries += [grouping.member_error(group, m, _refusal_note(found))
                    for m in group["members"] if not m.get("peer")]
    return entries, kept


KnownVersion = Callable[[str, str, "str | None"], "str | None"]
"""(spec name, image set id, spec digest) → the version the state recorded as verified for
this spec *as it is now*, or None; with digest None, the newest version the spec's record
names whatever the digest (to tell a lagging listing)."""


def unchanged_since_apply(hi: HealthImaging, assignments: list[Assignment],
                          known_version: KnownVersion) -> dict[tuple[str, str], str]:
    """``(spec, image set)`` → version, for the assignments that need no read: the state
    verified this very spec (same digest) on a version, and that version is still the
    latest. A version's metadata never changes, so the diff is still empty, exactly.

    The latest versions come from listings, never from one call per image set: selector
    targets carry the search that found them; the others are looked up with the paged
    listing drift uses (SearchImageSets, 50 a page, most recently updated first). An image
    set the listing does not show, or shows at another version, is read as usual."""
    expected = {(a.spec.name, a.image_set_id): (a, v) for a in assignments
                if (v := known_version(a.spec.name, a.image_set_id, a.spec.digest)) is not None}
    if not expected:
        return {}
    from .drift import listed_versions   # drift's listing; drift itself plans nothing

    live: dict[tuple[str, str], str] = {}
    for datastore in sorted({a.datastore_id for a, _ in expected.values()}):
        unlisted = {a.image_set_id for a, _ in expected.values()
                    if a.datastore_id == datastore and a.listed is None}
        if unlisted:
            live.update(((datastore, i), v) for i, v in
                        listed_versions(hi, datastore, unlisted).items())
    settled = {}
    for key, (a, version) in expected.items():
        current = a.listed.version if a.listed is not None else live.get((a.datastore_id,
                                                                          a.image_set_id))
        if current == version:
            settled[key] = version
    return settled


def make_plan(specs: list[Spec], hi: HealthImaging, redactor: Redactor, *,
              default_datastore: str | None, options: PlanOptions | None = None,
              check_overlaps: Callable[[list[tuple[Spec, str, str]]], list] | None = None,
              lineage: str | None = None, serial: int | None = None,
              state_serial: StateSerial | None = None,
              known_version: KnownVersion | None = None,
              refused: Refused | None = None) -> dict[str, Any]:
    """The whole plan document. Raises :class:`errors.SpecError` when, after selectors are
    resolved, two specs manage the same attribute of one image set. ``known_version`` lets
    image sets the state shows unchanged skip their reads (:func:`unchanged_since_apply`);
    ``refused`` turns a request the service already refused into an error
    (:func:`cannot_converge`)."""
    options = options or PlanOptions()
    assignments = resolve(select_specs(specs, options), hi, default_datastore)
    if check_overlaps is not None:
        problems = check_overlaps([(a.spec, a.datastore_id, a.image_set_id) for a in assignments])
        if problems:
            raise errors.SpecError(problems)
    log.debug("planning %d image sets with parallelism %d", len(assignments), options.parallelism)
    progress = Progress("plan", len(assignments), enabled=options.progress,
                        throttles=getattr(getattr(hi, "pacer", None), "throttle_count", None))

    studies = grouping.StudyIndex()

    settled = (unchanged_since_apply(hi, assignments, known_version)
               if known_version is not None and options.trust_state else {})

    def one(assignment: Assignment) -> dict[str, Any]:
        version = settled.get((assignment.spec.name, assignment.image_set_id))
        known = (known_version(assignment.spec.name, assignment.image_set_id, None)
                 if known_version is not None and assignment.listed is not None else None)
        if known is not None and int(known) > int(assignment.listed.version):
            # The state recorded a newer version than the search lists (an apply of this or
            # an earlier form of the spec, a rollback): the index lags, so the listed version
            # is not the one to plan on.
            assignment = replace(assignment, listed=None)
        if version is not None:
            entry = plan_entry(assignment, version, [], redactor)
            entry["state_serial"] = (state_serial(assignment.spec.name, assignment.image_set_id)
                                     if state_serial else None)
        else:
            entry = plan_one(hi, assignment, redactor, options, state_serial, studies)
        progress.step()
        return entry

    with ThreadPoolExecutor(max_workers=max(1, options.parallelism)) as pool:
        entries = list(pool.map(one, assignments))
    progress.close()
    entries, groups = grouping.plan_study_updates(
        entries, studies, hi, redactor, grouping.listed_studies(assignments), state_serial)
    if refused is not None:
        entries, groups = cannot_converge(entries, groups, refused)
    doc = plans.new_plan(entries, redacted=redactor.enabled, lineage=lineage, serial=serial,
                         groups=groups)
    return plans.note_not_reread(doc, len(settled))
