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

Here are the rules and the request; :mod:`.study_planner` plans the updates as a plan reads
its image sets.

:func:`primary_refusal` refuses, before any write, what :class:`~reconciler.spec.config.
PrimaryPolicy` says the service forbids on a primary image set outright. The study is named
by a hash of its UID (:func:`study_key`), never by the UID, which PS3.15 lists.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from ..data.service_facts import PATIENT, STUDY
from ..dicom.dictionary import vr_of_keyword
from ..documents import plans
from ..healthimaging.api import HealthImaging, ImageSetSummary
from ..spec.config import PrimaryPolicy
from ..spec.types import Attribute, DesiredAttributes, Position, Spec
from .diff import REMOVE, REMOVE_INSTANCE, REMOVE_SERIES, Change
from .payloads import Request, build_requests
from .reading import Assignment

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
