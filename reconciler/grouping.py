"""Study groups: one ``includeStudyImageSets`` request where a whole study needs one change.

HealthImaging applies an UpdateImageSetMetadata sent with ``includeStudyImageSets=true`` to
every primary image set sharing the target's StudyInstanceUID, atomically, and increments the
version of each (docs/service-notes.md, primary image sets). Where a plan would send the very same Patient/Study
change to each primary image set of a study, one such request does the work of N: N times
fewer writes at a quota of 0.25 per second, and the study never shows two patient names.

:func:`group_studies` runs at the end of planning. A study of one data store becomes a group
only when all of these hold; otherwise its entries stay as they are:

a. two or more entries of the plan target primary image sets of the study;
b. *every* primary image set of the study (one ``SearchImageSets`` on its
   StudyInstanceUID, unless a selector on that UID alone already listed the study) has
   exactly one entry in the plan, and that entry is an update: the request would otherwise
   write to an image set nobody reviewed;
c. the entries carry identical changes (operation, key, VR, before and after values: the
   payloads and before-digests are compared, never redacted markers), all at Patient or Study
   level, none private, in one request that does not need ``force``;
d. none of them is an error.

A group is one item of the plan (``groups`` in ``schemas/plan.v1.schema.json``): the shared
changes, one request with ``includeStudyImageSets=true`` sent to the *leader* (the lowest image
set id), and per member its spec, spec digest, pinned version, before-digest and state serial,
so that apply can check each member and record each one in the state. The StudyInstanceUID is
itself a PS3.15 profile attribute, so the plan names the study by a hash of it
(:func:`reconciler.importer.study_key`), never by the UID.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from . import plans
from .importer import study_key
from .model import PATIENT, STUDY
from .service import HealthImaging, ImageSet

if TYPE_CHECKING:
    from .planner import Assignment

log = logging.getLogger(__name__)

GROUP_LEVELS = (PATIENT, STUDY)
GROUP_OPS = ("add", "update", "remove")      # never a whole series or instance
MEMBER_KEYS = ("spec", "spec_digest", "image_set_id", "version_id", "before_digest",
               "state_serial")


@dataclass(frozen=True)
class StudyFacts:
    study_uid: str | None
    is_primary: bool | None


class StudyIndex:
    """What the planner saw of each image set's study while it held the pinned metadata (the
    document itself is dropped after its diff). Thread-safe: plan reads run in parallel."""

    def __init__(self) -> None:
        self._facts: dict[str, StudyFacts] = {}
        self._lock = threading.Lock()

    def note(self, image_set: ImageSet, metadata: dict[str, Any]) -> None:
        uid = ((metadata.get("Study") or {}).get("DICOM") or {}).get("StudyInstanceUID")
        facts = StudyFacts(uid if isinstance(uid, str) and uid else None, image_set.is_primary)
        with self._lock:
            self._facts[image_set.image_set_id] = facts

    def get(self, image_set_id: str) -> StudyFacts | None:
        with self._lock:
            return self._facts.get(image_set_id)


def study_filter(study_uid: str) -> list[dict[str, Any]]:
    """SearchImageSets filters for every image set of one study."""
    return [{"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": study_uid}]}]


def primary_image_sets(hi: HealthImaging, datastore_id: str, study_uid: str) -> set[str]:
    """The ids of the study's primary image sets (one search, every page)."""
    found = hi.search_image_sets(datastore_id, filters=study_filter(study_uid))
    return {s.image_set_id for s in found if s.is_primary}


def listed_studies(assignments: Iterable[Assignment]) -> dict[tuple[str, str], set[str]]:
    """The primary image sets of the studies that ``resolve()`` already listed, by (data
    store, StudyInstanceUID): a selector on ``DICOMStudyInstanceUID`` alone found every image
    set of its study, so no second search is needed for it."""
    listed: dict[tuple[str, str], set[str]] = {}
    for a in assignments:
        selector = a.spec.target.selector or {}
        if set(selector) != {"DICOMStudyInstanceUID"} or a.listed is None:
            continue
        primaries = listed.setdefault((a.datastore_id, selector["DICOMStudyInstanceUID"]), set())
        if a.listed.is_primary:
            primaries.add(a.image_set_id)
    return listed


def shared_change(entry: dict[str, Any]) -> str | None:
    """What every member of a group must have in common (a canonical JSON text), or None when
    the entry cannot be a member at all (condition c and d of the module docstring)."""
    if entry["action"] != plans.ACTION_UPDATE or entry["error"] or entry["force"] \
            or len(entry["requests"]) != 1 or entry["requests"][0]["force"]:
        return None
    if not entry["changes"] or any(
            c["level"] not in GROUP_LEVELS or c["private"] or c["op"] not in GROUP_OPS
            for c in entry["changes"]):
        return None
    request = entry["requests"][0]
    return json.dumps([entry["changes"], entry["before_digest"],
                       request["updatableAttributes"], request["removableAttributes"]],
                      sort_keys=True, ensure_ascii=False)


def make_group(members: list[dict[str, Any]], study: str) -> dict[str, Any]:
    """The plan item of a group of entries that passed every condition; the leader, whose
    request is sent, is the lowest image set id."""
    members = sorted(members, key=lambda e: e["image_set_id"])
    leader = members[0]
    return {
        "study": study,
        "datastore_id": leader["datastore_id"],
        "leader": leader["image_set_id"],
        "members": [{k: e[k] for k in MEMBER_KEYS} for e in members],
        "changes": leader["changes"],
        "requests": [dict(leader["requests"][0], includeStudyImageSets=True)],
    }


def candidate_studies(entries: list[dict[str, Any]], studies: StudyIndex
                      ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Entries that may form groups, by (data store, StudyInstanceUID): conditions a, c, d and
    the one-entry-per-image-set part of b. The search for the rest of b comes after."""
    per_image_set = Counter(e["image_set_id"] for e in entries)
    by_study: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        facts = studies.get(entry["image_set_id"]) if entry["image_set_id"] else None
        if facts is None or not facts.is_primary or facts.study_uid is None:
            continue
        by_study[(entry["datastore_id"], facts.study_uid)].append(entry)
    candidates = {}
    for key, members in by_study.items():
        shared = {shared_change(e) for e in members}
        if (len(members) >= 2 and len(shared) == 1 and None not in shared
                and all(per_image_set[e["image_set_id"]] == 1 for e in members)):
            candidates[key] = members
    return candidates


def group_studies(entries: list[dict[str, Any]], studies: StudyIndex, hi: HealthImaging,
                  listed: dict[tuple[str, str], set[str]] | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the plan's entries into those that stay single and the study groups. ``listed``:
    primary image sets of studies already listed (:func:`listed_studies`)."""
    groups, grouped = [], set()
    for (datastore_id, study_uid), members in candidate_studies(entries, studies).items():
        primaries = (listed or {}).get((datastore_id, study_uid))
        if primaries is None:
            primaries = primary_image_sets(hi, datastore_id, study_uid)
        key = study_key(study_uid)
        if primaries != {e["image_set_id"] for e in members}:
            log.debug("study %s: %d primary image sets, %d in the plan: not grouped",
                      key, len(primaries), len(members))
            continue
        groups.append(make_group(members, key))
        grouped.update(id(e) for e in members)
    groups.sort(key=lambda g: (g["datastore_id"], g["leader"]))
    return [e for e in entries if id(e) not in grouped], groups
