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
(:mod:`reconciler.documents.plans`); nothing here prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..core import errors
from ..core.packed import PackedList
from ..core.pools import bounded
from ..dicom.redact import Redactor
from ..documents import plans
from ..documents.progress import Progress
from ..documents.types import PlanDocument, PlanEntry, StudyUpdate
from ..healthimaging.api import DELETED, HealthImaging
from ..spec.config import PrimaryPolicy
from ..spec.types import Spec
from ..spec.lifecycle import Lifecycle
from ..states import State
from . import limits, removals, study_updates
from .diff import Change, ImageSetProblem, diff
from .entries import plan_entry
from .payloads import PayloadTooLarge, Request, schema_version_of
from .reading import (
    Assignment, Waiting, list_versions, moved_since_listed, read_listed, resolve_targets,
    study_key)
from .study_facts import StudyIndex
from .study_planner import StudyPlanner

log = logging.getLogger(__name__)

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
    primary: PrimaryPolicy = field(default_factory=PrimaryPolicy)   # study_updates.py

    @property
    def waiting(self) -> Waiting:
        return Waiting(self.lock_wait, self.poll_interval, self.sleep)


@dataclass
class Retirement:
    """What a plan needs to plan what leaves the specs (:mod:`.removals`) and to measure
    itself against ``limits`` (:mod:`.limits`): the state as the plan sees it (renames done),
    reconciler.yaml's lifecycle sections, whether the specs loaded are the whole project,
    the plan's ``moved`` entries and what the run lifts."""

    state: State
    lifecycle: Lifecycle
    complete: bool
    moved: list = field(default_factory=list)
    allow: limits.Allowances = field(default_factory=limits.Allowances)


def select_specs(specs: list[Spec], options: PlanOptions,
                 recorded: list[str] = ()) -> list[Spec]:
    """The specs ``--target`` / ``--exclude`` choose. ``recorded``: the spec names of the
    state, which a target may name too (a removed spec)."""
    chosen = [s for s in specs
              if removals.selected(s.name, options.targets, options.excludes)]
    if options.targets and not chosen and not any(
            removals.selected(n, options.targets, options.excludes) for n in recorded):
        raise errors.UsageError("--target matched no spec: " + ", ".join(options.targets))
    return chosen


StateSerial = Callable[[str, str], "int | None"]  # (spec, image set) → serial of its record


def plan_one(hi: HealthImaging, assignment: Assignment, redactor: Redactor,
             options: PlanOptions, state_serial: StateSerial | None = None,
             studies: StudyIndex | None = None) -> dict[str, Any]:
    serial = state_serial(assignment.spec.name, assignment.image_set_id) if state_serial else None
    entry = _plan_one(hi, assignment, redactor, options, studies)
    entry["state_serial"] = serial
    return entry


def _plan_one(hi: HealthImaging, assignment: Assignment, redactor: Redactor,
              options: PlanOptions, studies: StudyIndex | None = None) -> dict[str, Any]:
    image_set_id = assignment.image_set_id
    try:
        image_set, metadata = read_listed(hi, assignment, options.waiting)
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
    facts = studies.read(image_set, metadata) if studies is not None else None
    schema_version = schema_version_of(metadata)
    try:
        changes = diff(assignment.spec.attributes, metadata, image_set_id)
    except ImageSetProblem as exc:
        return plan_entry(assignment, image_set.version_id, [], redactor, error=str(exc))
    finally:
        del metadata  # bounded memory: the document is not needed past its diff
    if not changes and from_listing and moved_since_listed(hi, assignment, image_set):
        return _plan_one(hi, replace(assignment, listed=None), redactor, options, studies)
    deferred: list[Change] = []
    if image_set.is_primary and changes:
        refusal = study_updates.primary_refusal(changes, options.primary)
        if refusal is not None:
            return plan_entry(assignment, image_set.version_id, [], redactor,
                              error=f"image set {image_set_id} is a primary image set: {refusal}")
        if studies is not None:
            deferred, changes = study_updates.split(changes, options.primary)
            if deferred:
                studies.defer(assignment.spec, image_set_id, deferred, changes, facts)
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
            f"(primaryImageSets in reconciler.yaml; docs/primary-image-sets.md): {study_updates.WAY_OUT}. "
            f"Changing the spec plans anew; plan --retry-refused sends it again")


def cannot_converge(entries: Iterable[PlanEntry], groups: Iterable[StudyUpdate],
                    refused: Refused) -> tuple[PackedList, PackedList]:
    """Entries and study updates whose very request the service refused before become errors
    that say so, instead of proposing the doomed request again (a study update: an error for
    each of its members' specs). Both come back packed; the entries are repacked only when
    one changes."""
    def refusal(entry: PlanEntry) -> Any:
        return next((r for r in (refused(entry["spec"], entry["image_set_id"],
                                         Request.from_json(q).canonical())
                                 for q in entry["requests"]) if r is not None), None)

    kept, stopped, errors_after = PackedList(canonical=False), set(), []
    for group in groups:
        request = Request.from_json(group["requests"][0]).canonical()
        found = next((r for m in group["members"]
                      if (r := refused(m["spec"], m["image_set_id"], request)) is not None), None)
        if found is None:
            kept.append(group)
            continue
        # The members' own changes that were to follow it are not planned either: the error
        # of each member (one per spec and image set) says why.
        stopped.add(group["study"])
        errors_after += [study_updates.member_error(group, m, _refusal_note(found))
                         for m in group["members"] if not m.get("peer")]
    # One lookup pass; the entries are repacked only if it found something.
    refusals = {i: found for i, entry in enumerate(entries)
                if entry["requests"] and (found := refusal(entry)) is not None}
    if not stopped and not refusals:
        return (entries if isinstance(entries, PackedList)
                else PackedList.of(entries, canonical=False)), kept

    def changed() -> Iterable[PlanEntry]:
        for i, entry in enumerate(entries):
            if entry.get("after_study") in stopped:
                continue
            if i in refusals:
                study_updates.refuse_entry(entry, _refusal_note(refusals[i]))
            yield entry
        yield from errors_after
    return PackedList.of(changed(), canonical=False), kept


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

    live: dict[tuple[str, str], str] = {}
    for datastore in sorted({a.datastore_id for a, _ in expected.values()}):
        unlisted = {a.image_set_id for a, _ in expected.values()
                    if a.datastore_id == datastore and a.listed is None}
        if unlisted:
            live.update(((datastore, i), v) for i, v in
                        list_versions(hi, datastore, unlisted).versions.items())
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
              refused: Refused | None = None,
              retire: Retirement | None = None) -> PlanDocument:
    """The whole plan document. Raises :class:`errors.SpecError` when, after selectors are
    resolved, two specs manage the same attribute of one image set. ``known_version`` lets
    image sets the state shows unchanged skip their reads (:func:`unchanged_since_apply`);
    ``refused`` turns a request the service already refused into an error
    (:func:`cannot_converge`); ``retire`` adds what leaves the specs and the limits."""
    options = options or PlanOptions()
    recorded = retire.state.spec_names() if retire is not None else []
    assignments = resolve_targets(select_specs(specs, options, recorded), hi, default_datastore,
                                  options.parallelism)
    if check_overlaps is not None:
        problems = check_overlaps([(a.spec, a.datastore_id, a.image_set_id) for a in assignments])
        if problems:
            raise errors.SpecError(problems)
    log.debug("planning %d image sets with parallelism %d", len(assignments), options.parallelism)
    progress = Progress("plan", len(assignments), enabled=options.progress,
                        throttles=getattr(getattr(hi, "pacer", None), "throttle_count", None))

    studies = StudyIndex((a.spec for a in assignments), remember_studies=(
        retire is not None and retire.lifecycle.limits.configured))

    settled = (unchanged_since_apply(hi, assignments, known_version)
               if known_version is not None and options.trust_state else {})

    # The newest version any record of the state verified, per image set: a listing showing
    # an older one lags (whatever spec, or spec digest, the record is filed under).
    floor: dict[str, int] = {}
    for _, record in retire.state.records() if retire is not None else ():
        if record.version_after is not None:
            floor[record.image_set_id] = max(floor.get(record.image_set_id, 0),
                                             int(record.version_after))

    def one(assignment: Assignment) -> PlanEntry:
        version = settled.get((assignment.spec.name, assignment.image_set_id))
        known = (known_version(assignment.spec.name, assignment.image_set_id, None)
                 if known_version is not None and assignment.listed is not None else None)
        if assignment.listed is not None and max(
                int(known or 0), floor.get(assignment.image_set_id, 0)) > int(
                assignment.listed.version):
            # The state recorded a newer version than the search lists (an apply of this or
            # an earlier form of the spec, under this name or another, a rollback): the index
            # lags, so the listed version is not the one to plan on.
            assignment = replace(assignment, listed=None)
        if version is not None:
            entry = plan_entry(assignment, version, [], redactor)
            entry["state_serial"] = (state_serial(assignment.spec.name, assignment.image_set_id)
                                     if state_serial else None)
        else:
            entry = plan_one(hi, assignment, redactor, options, state_serial, studies)
        progress.step()
        return entry

    # Study updates are planned as the entries come in (a listed study as soon as its last
    # image set is read: study_planner.py), so that a plan of 100,000 studies does not hold
    # what each study needs until the end.
    grouping = StudyPlanner(studies, hi, redactor, assignments, state_serial,
                            options.parallelism)
    workers = max(1, options.parallelism)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for entry in bounded(pool, one, assignments, window=4 * workers):
            grouping.add(entry)
    progress.close()
    not_reread = len(settled)
    settled.clear()     # (one() reads them: emptied, not deleted)
    floor.clear()
    entries, groups = grouping.finish()
    del grouping        # its indexes: what follows holds only the entries and the updates
    if refused is not None:
        entries, groups = cannot_converge(entries, groups, refused)
    removed = None
    if retire is not None:
        removed = removals.plan_removed(
            hi, retire.state, assignments, {s.name: s for s in specs}, retire.lifecycle,
            redactor, complete=retire.complete, targets=options.targets,
            excludes=options.excludes, waiting=options.waiting,
            parallelism=options.parallelism,
            # (Every member but a peer is one of the assignments. Nothing to look up in a
            # state without records: a first plan of 100,000 studies unpacks no update.)
            peers={(m["spec"], m["image_set_id"]) for g in groups for m in g["members"]
                   if m.get("peer")} if len(retire.state) else frozenset())
    doc = plans.new_plan(entries, redacted=redactor.enabled, lineage=lineage, serial=serial,
                         groups=groups, removed=removed, moved=retire.moved if retire else None)
    doc = plans.note_not_reread(doc, not_reread)
    if retire is not None and retire.lifecycle.limits.configured:
        def study_of(image_set_id: str) -> str | None:
            uid = studies.study_uid(image_set_id)
            return study_key(uid) if uid else None
        doc = plans.note_limits(doc, limits.measure(doc, retire.lifecycle.limits,
                                                    retire.allow, study_of))
    return doc
