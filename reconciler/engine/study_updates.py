"""Study-consistent updates: Patient/Study changes to primary image sets, one request a study.

Since 2025 HealthImaging's imports make *primary* image sets, and its developer guide says of
them (docs/primary-image-sets.md has the words and the readings they allow): Patient- and
Series-level elements cannot be updated on a primary image set; ``force`` applies only to
non-primary image sets; an update sent with ``includeStudyImageSets=true`` applies to every
primary image set sharing the target's StudyInstanceUID, atomically, and increments the
version of each. So a Patient- or Study-level change to a primary image set is planned as one
*study update* (the plan's ``groups``):

* the Patient/Study changes of every plan entry that targets a primary image set of the study
  are merged (two specs asking different values of one attribute: a plan error naming both);
* one ``SearchImageSets`` on the StudyInstanceUID lists the study's primary image sets; each
  is a *member*: those targeted by a spec, and *peers* no spec targets, which the request
  changes all the same (read at their listed version, so the plan shows their before and
  after values; they are recorded under the leader's spec, so drift and rollback see them);
* one request, sent to the *leader* (the lowest targeted image set id) with
  ``includeStudyImageSets=true``, carries the merged changes; a removal carries the current
  value, so every member must hold the same one;
* the leader's own changes below the study (Series, Instance) travel in the same request (one
  write for the image set); another member's stay in its own entry, marked ``after_study``:
  apply sends it once the study update is verified, on the version it made.

:func:`primary_refusal` refuses, before any write, what :class:`~reconciler.spec.config.
PrimaryPolicy` says the service forbids on a primary image set outright. The study is named
by a hash of its UID (:func:`study_key`), never by the UID, which PS3.15 lists.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..core import errors
from ..core.canonical import canonical_bytes
from ..core.packed import PackedList
from ..core.pools import bounded
from ..data.service_facts import PATIENT, STUDY
from ..dicom.dictionary import vr_of_keyword
from ..dicom.redact import Redactor
from ..documents import plans
from ..healthimaging.api import HealthImaging, ImageSetSummary
from ..spec.config import PrimaryPolicy
from ..spec.types import Attribute, DesiredAttributes, Position, Spec
from .diff import REMOVE, REMOVE_INSTANCE, REMOVE_SERIES, Change, ImageSetProblem, diff
from .entries import before_digest, change_entry
from .payloads import PayloadTooLarge, Request, build_requests
from .reading import Assignment, study_key
from .study_facts import Keep, StudyFacts, StudyIndex, facts_of

log = logging.getLogger(__name__)

GROUP_LEVELS = (PATIENT, STUDY)
WAY_OUT = ("the way out: copy the image set to a non-primary one (CopyImageSet) and manage "
           "the copy, or promote a corrected copy with CopyImageSet promoteToPrimary; or, if "
           "this account's service allows it, say so under primaryImageSets in reconciler.yaml")


def primary_refusal(changes: list[Change], policy: PrimaryPolicy) -> str | None:
    """Why these changes cannot be made on a primary image set under ``policy``, naming the
    rule and the way out; None when they can (Patient/Study changes go study-wide)."""
    forced = [c for c in changes if c.needs_force]
    if forced and policy.force == "refused":
        return (f"{forced[0].path} needs force, which HealthImaging applies only to "
                f"non-primary image sets (primaryImageSets.force: refused); {WAY_OUT}")
    for change in changes:
        if change.op in (REMOVE_SERIES, REMOVE_INSTANCE) \
                or change.level not in policy.restricted_levels:
            continue
        study_wide = policy.study_consistent and change.level in GROUP_LEVELS
        if study_wide and policy.study_wide_updates == "allowed":
            continue
        how = ("even in a study-wide update (primaryImageSets.studyWideUpdates: refused)"
               if study_wide else "(primaryImageSets.restrictedLevels)")
        return (f"{change.path}: {change.level}-level elements cannot be updated on a primary "
                f"image set {how}; {WAY_OUT}")
    return None


def split(changes: list[Change], policy: PrimaryPolicy) -> tuple[list[Change], list[Change]]:
    """(the changes a study update carries, the rest) for a primary image set."""
    if not policy.study_consistent:
        return [], changes
    return ([c for c in changes if c.level in GROUP_LEVELS],
            [c for c in changes if c.level not in GROUP_LEVELS])


def study_filter(study_uid: str) -> list[dict[str, Any]]:
    """SearchImageSets filters for every image set of one study."""
    return [{"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": study_uid}]}]


def primary_summaries(hi: HealthImaging, datastore_id: str,
                      study_uid: str) -> dict[str, ImageSetSummary]:
    """The study's primary image sets, by id (one search, every page)."""
    found = hi.search_image_sets(datastore_id, filters=study_filter(study_uid))
    return {s.image_set_id: s for s in found if s.is_primary}


def primary_image_sets(hi: HealthImaging, datastore_id: str, study_uid: str) -> set[str]:
    return set(primary_summaries(hi, datastore_id, study_uid))


def listed_studies(assignments: Iterable[Assignment]
                   ) -> dict[tuple[str, str], tuple[ImageSetSummary, ...]]:
    """The primary image sets of the studies that ``reading.resolve_targets()`` already
    listed, by (data store, StudyInstanceUID): a selector on ``DICOMStudyInstanceUID`` alone
    found every image set of its study, so no second search is needed for it. (Tuples, made
    a dict where a study is planned: a table of 100,000 studies holds one per study.)"""
    listed: dict[tuple[str, str], dict[str, ImageSetSummary]] = {}
    for a in assignments:
        selector = a.spec.target.selector or {}
        if set(selector) != {"DICOMStudyInstanceUID"} or a.listed is None:
            continue
        primaries = listed.setdefault((a.datastore_id, selector["DICOMStudyInstanceUID"]), {})
        if a.listed.is_primary:
            primaries[a.image_set_id] = a.listed
    return {key: tuple(primaries.values()) for key, primaries in listed.items()}


def requested_attributes(request: dict[str, Any]) -> DesiredAttributes:
    """What a study update's request asks of every member, as desired attributes (a removal
    is an absent attribute): what apply verifies on each member and records for a peer."""
    desired = DesiredAttributes()
    where = Position("plan", 0, 0)
    for blob, removal in ((request.get("updatableAttributes"), False),
                          (request.get("removableAttributes"), True)):
        document = json.loads(blob) if isinstance(blob, str) else {}
        for level, target in ((PATIENT, desired.patient), (STUDY, desired.study)):
            for key, value in ((document.get(level) or {}).get("DICOM") or {}).items():
                target[key] = Attribute(key, None if removal else value,
                                        vr_of_keyword(key) or "UN", where)
    return desired


class StudyRefused(Exception):
    """The study update cannot be made: at plan, every entry of the study becomes an error;
    at apply, the update is stale."""


@dataclass
class _Study:
    datastore_id: str
    uid: str
    entries: list[dict[str, Any]] = field(default_factory=list)   # entries that defer changes


def _merge(study: _Study, studies: StudyIndex) -> DesiredAttributes:
    """The Patient/Study attributes every deferring entry asks for, merged."""
    merged = DesiredAttributes()
    owner: dict[tuple[str, str], str] = {}
    for entry in study.entries:
        spec, changes = studies.deferred(entry["spec"], entry["image_set_id"])
        wanted = {(c.level, c.key) for c in changes}
        for level, declared, target in ((PATIENT, spec.attributes.patient, merged.patient),
                                        (STUDY, spec.attributes.study, merged.study)):
            for key, attr in declared.items():
                if (level, key) not in wanted:
                    continue
                if key in target and target[key].value != attr.value:
                    raise StudyRefused(f"specs {owner[(level, key)]} and {spec.name} want different "
                                   f"values of {level}.{key} for the primary image sets of one "
                                   f"study, which one study-wide update cannot give")
                target[key], owner[(level, key)] = attr, spec.name
    return merged


def _peer_facts(hi: HealthImaging, datastore_id: str, summary: ImageSetSummary,
                keep: Keep | None) -> StudyFacts:
    try:
        metadata = hi.get_metadata(datastore_id, summary.image_set_id, summary.version)
    except errors.ServiceError as exc:
        raise errors.about(exc, f"image set {summary.image_set_id} (a primary image set of "
                                f"the same study)") from None
    return facts_of(True, summary.version, metadata, keep)


def _member_changes(merged: DesiredAttributes, facts: StudyFacts, image_set_id: str
                    ) -> list[Change]:
    document = {"Patient": {"DICOM": facts.patient or {}}, "Study": {"DICOM": facts.study or {}}}
    return diff(merged, document, image_set_id)


def _request_changes(per_member: dict[str, list[Change]]) -> list[Change]:
    """The changes the one request carries: every attribute some member needs; a removal
    must carry the one current value all members hold."""
    chosen: dict[tuple[str, str], Change] = {}
    for image_set_id, changes in sorted(per_member.items()):
        for change in changes:
            key = (change.level, change.key)
            seen = chosen.get(key)
            if change.op == REMOVE and seen is not None and seen.before != change.before:
                raise StudyRefused(f"{change.path} must be removed, but the study's primary image "
                               f"sets hold different values of it, and a removal must carry "
                               f"the current value of each")
            chosen.setdefault(key, change)
    for key, change in chosen.items():
        if change.op == REMOVE and any(
                not any((c.level, c.key) == key for c in changes)
                for changes in per_member.values()):
            raise StudyRefused(f"{change.path} must be removed, but not every primary image set of "
                           f"the study holds it, and a study-wide removal applies to each")
    return list(chosen.values())


def study_request(per_member: dict[str, list[Change]], leader: str, force: bool,
                  schema_version: Any) -> tuple[Request, list[Change]] | None:
    """The one request of a study update, from what each member needs (the leader's list also
    holds its own changes below the study, which travel in the same request: one write for
    the image set, and the service applies them to the leader only), and the changes it
    carries; None when no member needs anything. Plan and apply (after a conflict) both make
    it here, so a re-diff is compared with the reviewed request byte for byte."""
    study = {i: [c for c in changes if c.level in GROUP_LEVELS]
             for i, changes in per_member.items()}
    own = [c for c in per_member.get(leader, []) if c.level not in GROUP_LEVELS]
    carried = _request_changes(study) + own
    if not carried:
        return None
    requests = build_requests(carried, include_study_image_sets=True,
                              force=force and any(c.needs_force for c in own),
                              schema_version=schema_version)
    if len(requests) != 1:
        raise StudyRefused("the study-wide change does not fit in one request")
    return requests[0], carried


def study_attributes(request: dict[str, Any], leader_spec: Spec | None) -> DesiredAttributes:
    """What a member of a study update must hold: the request's Patient/Study attributes, and
    for the leader (``leader_spec``) also its own spec below the study."""
    desired = requested_attributes(request)
    if leader_spec is not None:
        desired.series = leader_spec.attributes.series
    return desired


def plan_study_updates(entries: list[dict[str, Any]], studies: StudyIndex, hi: HealthImaging,
                       redactor: Redactor, listed: dict | None = None,
                       state_serial=None, parallelism: int = 1
                       ) -> tuple[list[dict[str, Any]], PackedList]:
    """Turn the deferred Patient/Study changes of ``entries`` into study updates. Returns the
    entries that stay (with ``after_study`` where they must wait for one) and the updates
    (packed: nothing changes them once made). ``entries`` is consumed: an entry a study update
    absorbs leaves it as that study is planned, so that it is freed then, not at the end."""
    by_study: dict[tuple[str, str], _Study] = {}
    for entry in entries:
        facts = studies.get(entry["image_set_id"]) if entry["image_set_id"] else None
        if entry["error"] or facts is None or facts.study_uid is None \
                or studies.deferred(entry["spec"], entry["image_set_id"]) is None:
            continue
        key = (entry["datastore_id"], facts.study_uid)
        by_study.setdefault(key, _Study(*key)).entries.append(entry)
    listed = dict(listed or {})
    listed.update(_search_studies(hi, [k for k in by_study if k not in listed], parallelism))
    # Entries by image set, and where each stands: every study below looks up its own image
    # sets here (a scan of all entries per study was quadratic: 10^10 steps at 100,000).
    position = {id(e): i for i, e in enumerate(entries)}
    by_image_set: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_image_set.setdefault(entry["image_set_id"], []).append(entry)
    made: list[tuple[int, bytes]] = []
    for key in list(by_study):
        # What a study needed goes once it is planned (its facts, its listing, the entries
        # its update absorbs), and its update is kept packed: at 100,000 image sets these
        # are most of what the plan holds.
        study = by_study.pop(key)
        try:
            group = _plan_study(study, by_image_set, position, studies, hi, redactor,
                                listed, state_serial)
        except StudyRefused as exc:
            for entry in study.entries:
                refuse_entry(entry, f"study update of {study_key(study.uid)}: {exc}")
            continue
        except PayloadTooLarge as exc:
            for entry in study.entries:
                refuse_entry(entry, str(exc))
            continue
        finally:
            listed.pop(key, None)
            studies.settle((e["spec"], e["image_set_id"]) for e in study.entries)
        if group is None:
            continue
        leader = group.pop("_leader_entry")
        made.append((position[id(leader)], canonical_bytes(group)))
        for member in {m["image_set_id"] for m in group["members"]}:
            kept = []
            for entry in by_image_set.get(member, ()):
                if entry["datastore_id"] == study.datastore_id and not (
                        entry["requests"] and entry is not leader):
                    entries[position[id(entry)]] = None       # absorbed by the update
                    continue
                if entry["datastore_id"] == study.datastore_id:
                    entry["after_study"] = group["study"]
                kept.append(entry)
            by_image_set[member] = kept
    made.sort(key=lambda m: m[0])               # in the order of the specs that lead them
    return [e for e in entries if e is not None], PackedList(t for _, t in made)


def _search_studies(hi: HealthImaging, keys: list[tuple[str, str]], parallelism: int
                    ) -> dict[tuple[str, str], tuple[ImageSetSummary, ...]]:
    """The primary image sets of the studies ``keys`` (data store, StudyInstanceUID), searched
    up to ``parallelism`` at a time. A study whose search fails is left out: its turn in
    :func:`_plan_study` searches again and reports the error there, in order."""
    def search(key: tuple[str, str]) -> tuple[ImageSetSummary, ...] | None:
        try:
            return tuple(primary_summaries(hi, *key).values())
        except errors.ServiceError:
            return None

    if parallelism <= 1 or len(keys) <= 1:
        return {}
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        found = zip(keys, bounded(pool, search, keys, window=4 * parallelism))
        return {key: primaries for key, primaries in found if primaries is not None}


def refuse_entry(entry: dict[str, Any], reason: str) -> None:
    """Make a plan entry an error: nothing of it is sent."""
    entry.update(action=plans.ACTION_ERROR, error=reason, requests=[], changes=[],
                 before_digest=None, force=False)


def member_error(group: dict[str, Any], member: dict[str, Any], reason: str) -> dict[str, Any]:
    """A plan entry in error for a member of a study update that cannot be sent."""
    return {"spec": member["spec"], "spec_digest": member["spec_digest"],
            "datastore_id": group["datastore_id"], "image_set_id": member["image_set_id"],
            "version_id": member["version_id"], "action": plans.ACTION_ERROR, "force": False,
            "include_study_image_sets": False, "state_serial": member["state_serial"],
            "changes": [], "before_digest": None, "requests": [], "error": reason}


def _plan_study(study: _Study, by_image_set: dict[str, list[dict[str, Any]]],
                position: dict[int, int], studies: StudyIndex, hi: HealthImaging,
                redactor: Redactor, listed: dict, state_serial) -> dict[str, Any] | None:

    merged = _merge(study, studies)
    found = listed.get((study.datastore_id, study.uid))
    primaries = {s.image_set_id: s for s in found} if found is not None else None
    if primaries is None:
        try:
            primaries = primary_summaries(hi, study.datastore_id, study.uid)
        except errors.ServiceError as exc:
            raise errors.about(exc, f"study update of {study_key(study.uid)}: the search for "
                                    f"its primary image sets") from None
    leader = min(study.entries, key=lambda e: e["image_set_id"])
    targeted = {e["image_set_id"] for e in study.entries}
    blocked = sorted((e for i in primaries for e in by_image_set.get(i, ()) if e["error"]),
                     key=lambda e: position[id(e)])
    if blocked:
        raise StudyRefused(f"it would also change image set {blocked[0]['image_set_id']}, which "
                       f"cannot be planned ({blocked[0]['error']})")
    facts: dict[str, StudyFacts] = {}
    for image_set_id in sorted(set(primaries) | targeted):
        noted = studies.get(image_set_id)
        facts[image_set_id] = noted if noted is not None and image_set_id in targeted \
            else _peer_facts(hi, study.datastore_id, primaries[image_set_id], studies.keep)
    try:
        per_member = {i: _member_changes(merged, f, i) for i, f in facts.items()}
    except ImageSetProblem as exc:
        raise StudyRefused(str(exc)) from None
    own = studies.own(leader["spec"], leader["image_set_id"])
    spec = studies.deferred(leader["spec"], leader["image_set_id"])[0]
    per_member[leader["image_set_id"]] = per_member[leader["image_set_id"]] + own
    made = study_request(per_member, leader["image_set_id"], spec.force,
                         facts[leader["image_set_id"]].schema_version)
    if made is None:
        return None
    request, carried = made
    shown: dict[int, dict[str, Any]] = {}      # a change in a member and in the request: one

    def show(change: Change) -> dict[str, Any]:
        if id(change) not in shown:
            shown[id(change)] = change_entry(change, redactor)
        return shown[id(change)]

    members = []
    for image_set_id, changes in sorted(per_member.items()):
        mine = [e for e in study.entries if e["image_set_id"] == image_set_id] or [
            e for e in by_image_set.get(image_set_id, ()) if not e["error"]
            and e["datastore_id"] == study.datastore_id]
        for entry in mine or [None]:
            spec, digest = (entry["spec"], entry["spec_digest"]) if entry else \
                (leader["spec"], leader["spec_digest"])
            member = {"spec": spec, "spec_digest": digest, "image_set_id": image_set_id,
                      "version_id": facts[image_set_id].version_id,
                      "before_digest": before_digest(changes) if changes else None,
                      "state_serial": state_serial(spec, image_set_id) if state_serial else None,
                      "peer": entry is None,
                      "changes": [show(c) for c in changes]}
            members.append(member)
    # The leader's member first: its spec's own changes travel in the request.
    members.sort(key=lambda m: (m["image_set_id"], m["spec"]) !=
                 (leader["image_set_id"], leader["spec"]))
    return {
        "_leader_entry": leader,
        "study": study_key(study.uid),
        "datastore_id": study.datastore_id,
        "leader": leader["image_set_id"],
        "members": members,
        "changes": [show(c) for c in carried],
        "requests": [request.to_json()],
    }
