"""apply, for study updates (:mod:`.study_updates`): one includeStudyImageSets request as one
unit. Every member is checked to be at its planned version, and the study to have no other
primary image set, just before the request goes to the leader; after a conflict every member
is re-read and the request made again, which a saved plan sends only when it is the reviewed
one; then each member's new version is waited for and verified, and each member gets its
own outcome, so the state and rollback stay per image set.

:class:`StudyApplication` is a part of :class:`~reconciler.engine.applier.Applier` (a mixin:
it uses the applier's reads, waits, verification and failure handling)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core import errors
from ..healthimaging import waits
from ..healthimaging.api import DELETED
from ..spec.types import Spec
from . import study_updates
from .diff import ImageSetProblem
from .entries import before_digest
from .outcomes import (
    APPLIED, FAILED, SKIPPED, STALE, UNCHANGED, Outcome, Refused, Stop, response_elements)
from .payloads import Request
from .reading import study_key
from .sending import RETRIED_AFTER_REREAD

if TYPE_CHECKING:
    pass


class StudyApplication:
    """The study-update half of the applier."""

    def apply_group(self, group: dict[str, Any], specs: dict[str, Spec],
                    skip: dict[tuple[str, str], str] | None = None) -> list[Outcome]:
        """A study update (see :mod:`reconciler.engine.study_updates`) as one unit: check that every
        member is where the plan saw it, send the one includeStudyImageSets request to the
        leader, wait for every member's new version, verify each, and return one Outcome per
        member as if it had been applied alone (the leader's carries the write; the others
        have ``writes=0``), so the state and rollback stay per image set."""
        ds, leader_id = group["datastore_id"], group["leader"]
        members = [dict(m) for m in
                   sorted(group["members"], key=lambda m: m["image_set_id"] != leader_id)]
        outcomes = [Outcome(m["spec"], ds, m["image_set_id"], FAILED,
                            version_before=m["version_id"]) for m in members]
        name = f"study update {group['study']}"
        try:
            stale = [(m, (skip or {}).get((m["spec"], m["image_set_id"]))
                      or (f"spec {m['spec']} is not among the specs loaded"
                          if m["spec"] not in specs else None)) for m in members]
            stale = [(m, reason) for m, reason in stale if reason]
            if stale:
                member, reason = stale[0]
                raise Stop(STALE, f"{name}: member {member['image_set_id']}: {reason}")
            # What each member must hold: the request's Patient/Study attributes, and for the
            # leader also its own spec below the study (its changes travel in the request).
            study_specs = []
            for member, outcome in zip(members, outcomes):
                leads = member is members[0]     # the plan lists the leader's member first
                spec = specs[member["spec"]]
                study_specs.append(replace(spec.whole(), attributes=study_updates.study_attributes(
                    group["requests"][0], spec if leads else None)))
                if member.get("peer"):     # recorded with what the request gave it, no more
                    outcome.record_spec = study_specs[-1]
            there = self._group_write(group, members, specs, study_specs, outcomes)
        except (Stop, ImageSetProblem, errors.ServiceError) as exc:
            status, reason = self._failure(exc)
            for outcome in outcomes:
                outcome.status, outcome.reason = status, reason
                if isinstance(exc, Refused):
                    outcome.refused = (exc.kind, exc.version,
                                       Request.from_json(group["requests"][0]).canonical())
            return outcomes
        if there is not None:
            versions, landed = there
            for outcome in outcomes:
                outcome.version_after = versions[outcome.image_set_id]
                outcome.status = APPLIED if landed else UNCHANGED
                outcome.reason = "the desired state is already there" + (
                    " (a write answered with an error or a timeout had landed)" if landed else "")
            return outcomes
        # One bound for the whole study: the update is atomic, its versions finish together.
        deadline = time.monotonic() + self.options.wait_timeout
        for member, outcome, study_spec in zip(members, outcomes, study_specs):
            if outcome.image_set_id != leader_id:
                outcome.reason = (f"written by the {name} request to image set {leader_id} "
                                  f"(includeStudyImageSets)")
                # includeStudyImageSets increments every member's version (docs/service-notes.md,
                # primary image sets), and the member was at version_id, unlocked, just before
                # the write.
                outcome.response = {"latestVersionId": str(int(member["version_id"]) + 1)}
            elif not outcome.response:       # a second spec's member on the leader
                outcome.response = dict(outcomes[0].response)
            version = outcome.response["latestVersionId"]
            try:
                self._wait(ds, outcome.image_set_id, version, outcome.response, deadline)
                self._verify(study_spec, ds, outcome.image_set_id, version)
                outcome.status, outcome.version_after = APPLIED, version
            except (Stop, ImageSetProblem, errors.ServiceError) as exc:
                outcome.status, outcome.reason = self._failure(exc)
                if isinstance(exc, Refused):
                    outcome.refused = (exc.kind, exc.version,
                                       Request.from_json(group["requests"][0]).canonical())
        return outcomes

    def _group_write(self, group: dict[str, Any], members: list[dict[str, Any]],
                     specs: dict[str, Spec], study_specs: list[Spec], outcomes: list[Outcome]
                     ) -> tuple[dict[str, str], bool] | None:
        """Send the study update's request to the leader (``members[0]``). None once it was
        accepted (the answer is in ``outcomes[0]``); ``(versions, landed)`` when the desired
        state was found on every member instead. After a conflict every member is re-read and
        the request made again from what each now needs (:func:`study_updates.study_request`): with
        a saved plan it must be the reviewed one, byte for byte, with the same before values on
        every member, else the update is stale; then it goes out on the new versions."""
        ds, leader = group["datastore_id"], members[0]
        request = Request.from_json(group["requests"][0])
        self._check_study(group, leader, {m["image_set_id"] for m in members})
        attempt, unsure = 0, False
        announced: dict[tuple[str, str], str] = {}
        while True:
            if self._halt.is_set():
                raise Stop(SKIPPED, f"not attempted: {self._halt_reason}")
            try:
                self._check_members(ds, members[1:])
                if not unsure:   # the one write changes every member: each is recorded first
                    for m, outcome in zip(members, outcomes):
                        if announced.get((m["spec"], m["image_set_id"])) != m["version_id"]:
                            self._announce(outcome.record_spec or specs[m["spec"]], ds,
                                           m["image_set_id"], m["version_id"])
                            announced[(m["spec"], m["image_set_id"])] = m["version_id"]
                result = self._send(ds, leader["image_set_id"], leader["version_id"], request)
            except RETRIED_AFTER_REREAD as exc:
                attempt += 1
                unsure = self._back_off(exc, attempt) or unsure
                if isinstance(exc, errors.ThrottlingError):
                    continue  # refused, not accepted: same request, same versions
                request = self._study_rediff(group, members, study_specs, request)
                if request is None:
                    return {m["image_set_id"]: m["version_id"] for m in members}, unsure
                if not unsure:
                    for member, outcome in zip(members, outcomes):
                        outcome.version_before = member["version_id"]
                continue
            outcomes[0].writes += 1
            outcomes[0].response = response_elements(result)
            return None

    def _study_rediff(self, group: dict[str, Any], members: list[dict[str, Any]],
                      study_specs: list[Spec], reviewed: Request) -> Request | None:
        """Every member read again (their ``version_id`` moves to what was read); the request
        to send now, or None when every member already holds what it must."""
        per_member, schema_version, moved = {}, None, []
        for member, study_spec in zip(members, study_specs):
            version, changes, found = self._rediff(study_spec, group["datastore_id"],
                                                   member["image_set_id"], primary_rules=False)
            if version != member["version_id"]:
                moved.append(f"{member['image_set_id']} moved to version {version}")
            member["version_id"] = version
            per_member[member["image_set_id"]] = changes
            if member["image_set_id"] == group["leader"]:
                schema_version = found
            if self.options.saved_plan and changes and \
                    before_digest(changes) != member["before_digest"]:
                raise _differs(group, moved, member["image_set_id"])
        if not any(per_member.values()):
            return None
        try:
            made = study_updates.study_request(per_member, group["leader"], reviewed.force,
                                          schema_version)
        except study_updates.StudyRefused as exc:
            raise Stop(STALE, f"study update {group['study']}: {exc}; plan again") from None
        if made is None:
            return None
        fresh = made[0]
        if self.options.saved_plan and fresh.to_json() != reviewed.to_json():
            raise _differs(group, moved, "of the study")
        return fresh

    def _check_study(self, group: dict[str, Any], leader: dict[str, Any],
                     planned: set[str]) -> None:
        """The study's primary image sets must still be exactly the members: the request
        changes every one of them, and a newcomer was never reviewed."""
        ds = group["datastore_id"]
        with self._reads:
            try:
                metadata = self.hi.get_metadata(ds, leader["image_set_id"], leader["version_id"])
            except errors.ConflictError:
                # A deleted image set's metadata may answer 409: say what it is.
                if self.hi.get_image_set(ds, leader["image_set_id"]).state == DELETED:
                    raise errors.NotFoundError(f"image set {leader['image_set_id']} is DELETED",
                                               operation="GetImageSetMetadata") from None
                raise
            study_uid = str(((metadata.get("Study") or {}).get("DICOM") or {})
                            .get("StudyInstanceUID") or "")
            del metadata
        if not study_uid or study_key(study_uid) != group["study"]:
            raise Stop(STALE, f"study update {group['study']}: image set "
                               f"{leader['image_set_id']} is not of that study; plan again")
        primaries = study_updates.primary_image_sets(self.hi, ds, study_uid)
        if primaries != planned:
            raise Stop(STALE, f"study update {group['study']}: the study now has "
                               f"{len(primaries)} primary image set(s), not the "
                               f"{len(planned)} planned; plan again")

    def _check_members(self, ds: str, members: list[dict[str, Any]]) -> None:
        """Raise ConflictError when a member is no longer at its planned version, or is busy:
        includeStudyImageSets pins only the leader's version."""
        for member in members:
            image_set = self.hi.get_image_set(ds, member["image_set_id"])
            if image_set.version_id != member["version_id"] or waits.busy(image_set):
                raise errors.ConflictError(
                    f"image set {member['image_set_id']} of the study update is at version "
                    f"{image_set.version_id} ({image_set.state}), planned "
                    f"{member['version_id']}", operation="GetImageSet")


def _differs(group: dict[str, Any], moved: list[str], which: str) -> Stop:
    """A saved plan's study update whose change is no longer the reviewed one."""
    return Stop(STALE, f"study update {group['study']}: image set {', '.join(moved) or which} "
                       f"since the plan and the change now differs from the reviewed one; "
                       f"plan again")
