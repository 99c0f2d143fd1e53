"""apply: send reviewed requests with optimistic concurrency, wait, verify, record.

For each image set of a plan (docs/plan-and-apply.md):

* each request goes with ``latestVersionId`` = the version its payload was computed from;
* on ``ConflictException`` (or a 500 / timeout, after which a write may have landed behind
  our back) the image set is re-read and re-diffed against its spec, then:
  - the desired state is already there → success with no further write (``applied`` when
    it is our own write that landed unseen, ``unchanged`` when someone else's);
  - with a saved plan, a re-diff that differs from the reviewed one (payloads or before
    values) → **stale**: nothing unreviewed is written;
  - otherwise the (identical, or freshly planned) payload is sent against the new version;
* updates are asynchronous: the new version is polled until it leaves ``LOCKED``; it must end
  ``UPDATED`` (``UPDATE_FAILED`` reports the service's message); then the metadata of that
  version is read again and the managed attributes must match the spec;
* a study update (:mod:`reconciler.engine.study_updates`) is one unit: every member is checked to be at
  its planned version, and the study to have no other primary image set, just before the one
  includeStudyImageSets request goes to the leader; after a conflict every member is re-read
  and the request made again, which a saved plan sends only when it is the reviewed one; then
  each member's new version is waited for and verified, and each member gets its own
  outcome; an entry's own changes that follow its study update (``after_study``) go next;
* independent image sets go on after one fails, unless ``fail_fast``; ``AccessDenied`` and
  ``ServiceQuotaExceeded`` stop every further write, and so does an ``on_result`` that
  fails (the state could not be saved: what cannot be recorded is not done).

The applier knows nothing of the state: after each image set it calls ``on_result``, which the
caller uses to save the state at once (so a crash loses nothing already applied).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..core import errors
from ..healthimaging import waits
from ..healthimaging.api import (
    DELETED,
    UPDATE_FAILED,
    UPDATED,
    HealthImaging,
    UpdateResult,
)
from ..spec.config import PrimaryPolicy
from ..spec.types import Spec
from . import study_updates
from .diff import Change, ImageSetProblem, diff
from .entries import before_digest
from .payloads import Request, build_requests, schema_version_of
from .reading import Waiting, read_pinned, study_key

log = logging.getLogger(__name__)

APPLIED, UNCHANGED, STALE, FAILED, SKIPPED, MISSING = (
    "applied", "unchanged", "stale", "failed", "skipped", "missing")


@dataclass
class ApplyOptions:
    saved_plan: bool = True          # a reviewed plan: never write what differs from it
    fail_fast: bool = False
    parallelism: int = 4             # metadata documents read (and diffed) at once
    in_flight: int = 32              # image sets in progress at once, waits included
    max_attempts: int = 5            # re-read / re-diff rounds per image set
    wait_timeout: float = 600.0      # seconds for one update to leave LOCKED
    poll_interval: float = 0.2
    backoff_base: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    primary: PrimaryPolicy = field(default_factory=PrimaryPolicy)   # see study_updates.py


@dataclass
class Outcome:
    """What happened to one image set; the report and the state are made from it."""

    spec: str
    datastore_id: str
    image_set_id: str
    status: str
    reason: str = ""
    version_before: str | None = None      # the version our first write went on (rollback's)
    version_after: str | None = None       # the verified version holding the desired state
    writes: int = 0
    response: dict[str, Any] = field(default_factory=dict)   # last UpdateImageSetMetadata answer
    refused: tuple[str, str, str] | None = None   # (kind, version, canonical request) refused
    record_spec: Spec | None = None        # what the state records instead of the named spec


def flatten(payload: str | None, kind: str) -> set[tuple[str, str, str]]:
    """The leaves of a request document as ``(kind, path, canonical JSON value)``; an empty
    series / instance object is itself a leaf (a whole removal)."""
    if not payload:
        return set()
    items: set[tuple[str, str, str]] = set()

    def walk(node: Any, path: str, parent: str) -> None:
        if parent in ("DICOM", "DICOMVRs") or not isinstance(node, dict) or not node:
            items.add((kind, path, json.dumps(node, sort_keys=True)))
            return
        for key, value in node.items():
            if key != "SchemaVersion":
                walk(value, f"{path}/{key}", path.rsplit("/", 1)[-1])

    walk(json.loads(payload), "", "")
    return items


def _response(result) -> dict[str, Any]:
    """The report's response elements of an UpdateImageSetMetadata answer."""
    return {
        "latestVersionId": result.latest_version_id,
        "imageSetState": result.state,
        "imageSetWorkflowStatus": result.workflow_status,
        "message": result.message,
        "createdAt": result.created_at.isoformat() if result.created_at else None,
        "updatedAt": result.updated_at.isoformat() if result.updated_at else None,
    }


# Write failures that are retried: after a re-read, except throttling (refused, not accepted)
_REFUSED = (errors.ConflictError, errors.InternalServerError, errors.EndpointError,
            errors.ThrottlingError)


def _retried(exc: errors.ServiceError) -> bool:
    """Whether the SDK had already sent this request more than once when it failed: a 409
    after a retried write may be the write itself, landed behind an error or a timeout."""
    return bool(exc.retry_attempts)


def send_update(hi: HealthImaging, ds: str, image_set_id: str, version: str,
                **request: Any) -> UpdateResult:
    """UpdateImageSetMetadata on ``version`` (every write of the product goes through here).

    A stale ``latestVersionId``, or a write to an image set that is LOCKED, may be answered
    with 400 ValidationException instead of 409 (the API reference does not say which). So a
    400 is told apart by one ``GetImageSet``: when the latest version is no longer ``version``,
    or the image set is LOCKED or updating for study consistency, the 400 is raised as the
    :class:`~reconciler.core.errors.ConflictError` it stands for (keeping botocore's retry count,
    so a retried write that may have landed is still recognised); otherwise it is a real bad
    request and the service's error is raised as it came."""
    try:
        return hi.update_metadata(ds, image_set_id, version, **request)
    except errors.ServiceValidationError as exc:
        if exc.code != "ValidationException":
            raise        # refused by the SDK before anything was sent (ParamValidationError)
        try:
            live = hi.get_image_set(ds, image_set_id)
        except errors.ServiceError:
            raise exc from None
        if live.version_id == version and not waits.busy(live):
            raise
        conflict = errors.ConflictError(
            f"ValidationException on version {version}, taken as a conflict: the image set "
            f"is at version {live.version_id} ({live.state}"
            f"{'/' + live.workflow_status if live.workflow_status else ''})",
            status=exc.status, operation=exc.operation)
        conflict.retry_attempts = exc.retry_attempts
        conflict.subject = exc.subject
        raise conflict from exc


BeforeWrite = Callable[[Spec, str, str, str], None]
"""(spec, data store, image set, version) → None, called right before the first write of an
image set is sent on that version (again if a re-read moved the version before any write)."""


class _Stop(Exception):
    """Stop this image set with an outcome (stale, failed, missing)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class _Refused(_Stop):
    """The service refused the request itself (UPDATE_FAILED, or a 400 that is no stale
    version): sending it again would fail the same way."""

    def __init__(self, kind: str, version: str, reason: str):
        super().__init__(FAILED, reason)
        self.kind, self.version = kind, version


class Applier:
    def __init__(self, hi: HealthImaging, options: ApplyOptions | None = None):
        self.hi = hi
        self.options = options or ApplyOptions()
        self._halt = threading.Event()     # AccessDenied / quota / fail-fast: no more writes
        self._halt_reason = ""
        self._reads = threading.BoundedSemaphore(max(1, self.options.parallelism))
        self._before_write: BeforeWrite | None = None

    def _announce(self, spec: Spec, ds: str, image_set_id: str, version: str) -> None:
        """Tell ``before_write`` (the caller records a pending write) right before the first
        write of an image set goes out on ``version``. What cannot be recorded is not sent."""
        if self._before_write is None:
            return
        try:
            self._before_write(spec, ds, image_set_id, version)
        except BaseException:
            self.halt("the state could not be saved")
            raise

    # -- one image set -------------------------------------------------------------------------
    def _wait(self, ds: str, image_set_id: str, version: str,
              response: dict[str, Any], deadline: float | None = None) -> None:
        """Poll *our* version until it leaves LOCKED (and a study-wide update in flight);
        require UPDATED. The final state goes into ``response`` (also when it is a failure,
        so the report shows it)."""
        if deadline is None:
            deadline = time.monotonic() + self.options.wait_timeout
        image_set = waits.settle(self.hi, ds, image_set_id, version, deadline=deadline,
                                 interval=self.options.poll_interval, sleep=self.options.sleep)
        if image_set is None:
            raise _Stop(FAILED, f"version {version} stayed LOCKED for more than "
                                f"{self.options.wait_timeout:g}s")
        response.update({"imageSetState": image_set.state,
                         "imageSetWorkflowStatus": image_set.workflow_status,
                         "message": image_set.message})
        if image_set.workflow_status == UPDATE_FAILED:
            raise _Refused("UPDATE_FAILED", version,
                           f"UPDATE_FAILED: {image_set.message or 'no message'}")
        if image_set.workflow_status != UPDATED:
            raise _Stop(FAILED, f"version {version} ended {image_set.state}/"
                                f"{image_set.workflow_status}, not UPDATED")

    def _rediff(self, spec: Spec, ds: str, image_set_id: str,
                primary_rules: bool = True) -> tuple[str, list[Change], Any]:
        """The latest unlocked version, the diff against it, and its SchemaVersion (which the
        fresh payloads repeat, see :mod:`reconciler.engine.payloads`). On a primary image set the
        rules of the plan hold: a change the service forbids stops the image set, and a
        Patient/Study change is a study update's, which a single entry never sends."""
        with self._reads:
            image_set, metadata = read_pinned(
                self.hi, ds, image_set_id,
                Waiting(self.options.wait_timeout, self.options.poll_interval, self.options.sleep))
            if image_set.state == DELETED:
                raise errors.NotFoundError(f"image set {image_set_id} is DELETED",
                                           operation="GetImageSet")
            changes = diff(spec.attributes, metadata, image_set_id)
            schema_version = schema_version_of(metadata)
            del metadata
        if primary_rules and image_set.is_primary and changes:
            refusal = study_updates.primary_refusal(changes, self.options.primary)
            if refusal is not None:
                raise _Stop(FAILED, f"image set {image_set_id} is a primary image set: {refusal}")
            deferred, _ = study_updates.split(changes, self.options.primary)
            if deferred:
                raise _Stop(STALE, f"the Patient/Study values of image set {image_set_id} moved "
                                   f"since the plan (version {image_set.version_id}); they need a "
                                   f"study update: plan again")
        return image_set.version_id, changes, schema_version

    def _verify(self, spec: Spec, ds: str, image_set_id: str, version: str) -> None:
        """The managed attributes must match the spec on the version we made."""
        with self._reads:
            metadata = self.hi.get_metadata(ds, image_set_id, version)
            left = diff(spec.attributes, metadata, image_set_id)
            del metadata
        if left:
            raise _Stop(FAILED, f"verification failed: {len(left)} managed attribute(s) "
                                f"differ on version {version}: "
                                + ", ".join(c.path for c in left[:5]))

    def _back_off(self, exc: errors.ServiceError, attempt: int) -> bool:
        """After a write that failed with one of ``_REFUSED``: give up after the last attempt,
        else sleep (exponential, jittered). True when the write may have landed unseen (a
        500, a lost connection, or a 409 met by botocore's retry of it)."""
        if attempt >= self.options.max_attempts:
            raise _Stop(FAILED, f"gave up after {attempt} attempts: {exc}") from exc
        self.options.sleep(self.options.backoff_base * (2 ** (attempt - 1))
                           * (0.5 + random.random()))
        return not isinstance(exc, errors.ThrottlingError) and (
            not isinstance(exc, errors.ConflictError) or _retried(exc))

    def _failure(self, exc: Exception) -> tuple[str, str]:
        """The status and reason an image set stops with."""
        if isinstance(exc, _Stop):
            return exc.status, exc.reason
        if isinstance(exc, errors.NotFoundError):
            return MISSING, f"image set not found: {exc.message}"
        if isinstance(exc, errors.ServiceValidationError):
            return FAILED, f"ValidationException: {exc.message}"
        if isinstance(exc, (errors.AccessDeniedError, errors.QuotaExceededError)):
            self.halt(f"{exc.code} on an earlier image set")
        return FAILED, str(exc)

    def _send(self, ds: str, image_set_id: str, version: str, request: Request):
        try:
            return send_update(
                self.hi, ds, image_set_id, version, updatable=request.updatable,
                removable=request.removable, force=request.force,
                include_study_image_sets=request.include_study_image_sets)
        except errors.ServiceValidationError as exc:   # not a stale version: see send_update
            raise _Refused("ValidationException", version,
                           f"ValidationException: {exc.message}") from exc

    def _acceptable(self, fresh: list[Request], changes: list[Change], entry: dict[str, Any],
                    writes: int) -> bool:
        """May ``fresh`` be sent under a saved plan? Before any write: only if it is exactly
        the reviewed change (same payloads, same before values). In the middle of a split
        sequence: only if every change it carries was in a reviewed payload."""
        if not self.options.saved_plan:
            return True
        if writes == 0:
            return ([r.to_json() for r in fresh] == entry["requests"]
                    and before_digest(changes) == entry["before_digest"])
        reviewed = set()
        for request in entry["requests"]:
            reviewed |= flatten(request.get("updatableAttributes"), "set")
            reviewed |= flatten(request.get("removableAttributes"), "remove")
        return all(item in reviewed for r in fresh
                   for item in flatten(r.updatable, "set") | flatten(r.removable, "remove"))

    def apply_one(self, entry: dict[str, Any], spec: Spec, announce: bool = True) -> Outcome:
        """``announce``: False for an entry that follows its study update, whose members were
        announced (recorded as pending) before that update's write."""
        ds, image_set_id = entry["datastore_id"], entry["image_set_id"]
        version = entry["version_id"]
        outcome = Outcome(entry["spec"], ds, image_set_id, FAILED, version_before=version)
        requests = [Request.from_json(r) for r in entry["requests"]]
        if not requests:
            outcome.status, outcome.version_after = UNCHANGED, version
            return outcome
        attempt = 0
        # The version a write that may have landed unseen (a 500 or a lost connection after
        # sending it) was pinned to; botocore retries such a write itself, and its retry
        # then meets a 409 when the first one did land.
        unsure_from: str | None = None
        announced: str | None = None
        try:
            while requests:
                if self._halt.is_set():
                    raise _Stop(SKIPPED, f"not attempted: {self._halt_reason}")
                if announce and outcome.writes == 0 and unsure_from is None \
                        and announced != version:
                    self._announce(spec, ds, image_set_id, version)
                    announced = version
                try:
                    result = self._send(ds, image_set_id, version, requests[0])
                except _REFUSED as exc:
                    attempt += 1
                    if self._back_off(exc, attempt):
                        unsure_from = unsure_from or version
                    if isinstance(exc, errors.ThrottlingError):
                        continue  # refused, not accepted: same payload, same version
                    # The version moved on, or our write may have landed: re-read, re-diff.
                    version, changes, schema_version = self._rediff(spec, ds, image_set_id)
                    if not changes:
                        outcome.version_after = version
                        outcome.reason = "the desired state is already there"
                        if outcome.writes or unsure_from is not None:
                            outcome.status = APPLIED
                            if not outcome.writes:
                                outcome.version_before = unsure_from
                                outcome.reason += (" (a write answered with an error or a "
                                                   "timeout had landed)")
                        else:
                            outcome.status = UNCHANGED
                        return outcome
                    fresh = build_requests(changes, force=spec.force,
                                           include_study_image_sets=spec.include_study_image_sets,
                                           schema_version=schema_version)
                    if not self._acceptable(fresh, changes, entry, outcome.writes):
                        raise _Stop(STALE, f"the image set moved to version {version} and the "
                                           f"change now differs from the reviewed plan; plan "
                                           f"again")
                    requests = fresh
                    continue
                if outcome.writes == 0:
                    outcome.version_before = version   # what rollback must go back to
                outcome.writes += 1
                outcome.response = _response(result)
                self._wait(ds, image_set_id, result.latest_version_id, outcome.response)
                version = result.latest_version_id
                requests = requests[1:]
            # every request landed: verify the managed attributes on the version we made
            self._verify(spec, ds, image_set_id, version)
            outcome.status, outcome.version_after = APPLIED, version
        except (_Stop, ImageSetProblem, errors.ServiceError) as exc:
            outcome.status, outcome.reason = self._failure(exc)
            if isinstance(exc, _Refused):
                outcome.refused = (exc.kind, exc.version, requests[0].canonical())
        return outcome

    # -- a study update ------------------------------------------------------------------------
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
                raise _Stop(STALE, f"{name}: member {member['image_set_id']}: {reason}")
            # What each member must hold: the request's Patient/Study attributes, and for the
            # leader also its own spec below the study (its changes travel in the request).
            study_specs = []
            for member, outcome in zip(members, outcomes):
                leads = member is members[0]     # the plan lists the leader's member first
                spec = specs[member["spec"]]
                study_specs.append(replace(spec, attributes=study_updates.study_attributes(
                    group["requests"][0], spec if leads else None)))
                if member.get("peer"):     # recorded with what the request gave it, no more
                    outcome.record_spec = study_specs[-1]
            there = self._group_write(group, members, specs, study_specs, outcomes)
        except (_Stop, ImageSetProblem, errors.ServiceError) as exc:
            status, reason = self._failure(exc)
            for outcome in outcomes:
                outcome.status, outcome.reason = status, reason
                if isinstance(exc, _Refused):
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
            except (_Stop, ImageSetProblem, errors.ServiceError) as exc:
                outcome.status, outcome.reason = self._failure(exc)
                if isinstance(exc, _Refused):
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
                raise _Stop(SKIPPED, f"not attempted: {self._halt_reason}")
            try:
                self._check_members(ds, members[1:])
                if not unsure:   # the one write changes every member: each is recorded first
                    for m, outcome in zip(members, outcomes):
                        if announced.get((m["spec"], m["image_set_id"])) != m["version_id"]:
                            self._announce(outcome.record_spec or specs[m["spec"]], ds,
                                           m["image_set_id"], m["version_id"])
                            announced[(m["spec"], m["image_set_id"])] = m["version_id"]
                result = self._send(ds, leader["image_set_id"], leader["version_id"], request)
            except _REFUSED as exc:
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
            outcomes[0].response = _response(result)
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
                raise _Stop(STALE, f"study update {group['study']}: image set "
                                   f"{', '.join(moved) or member['image_set_id']} since the "
                                   f"plan and the change now differs from the reviewed one; "
                                   f"plan again")
        if not any(per_member.values()):
            return None
        try:
            made = study_updates.study_request(per_member, group["leader"], reviewed.force,
                                          schema_version)
        except study_updates.StudyRefused as exc:
            raise _Stop(STALE, f"study update {group['study']}: {exc}; plan again") from None
        if made is None:
            return None
        fresh = made[0]
        if self.options.saved_plan and fresh.to_json() != reviewed.to_json():
            raise _Stop(STALE, f"study update {group['study']}: image set "
                               f"{', '.join(moved) or 'of the study'} since the plan and the "
                               f"change now differs from the reviewed one; plan again")
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
            raise _Stop(STALE, f"study update {group['study']}: image set "
                               f"{leader['image_set_id']} is not of that study; plan again")
        primaries = study_updates.primary_image_sets(self.hi, ds, study_uid)
        if primaries != planned:
            raise _Stop(STALE, f"study update {group['study']}: the study now has "
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

    def halt(self, reason: str) -> None:
        if not self._halt.is_set():
            self._halt_reason = reason
            self._halt.set()

    # -- the whole plan ------------------------------------------------------------------------
    def apply(self, plan: dict[str, Any], specs: dict[str, Spec],
              on_result: Callable[[Outcome, Spec | None], None] | None = None,
              skip: dict[tuple[str, str], str] | None = None,
              before_write: BeforeWrite | None = None) -> list[Outcome]:
        """Apply every entry of ``plan``; ``skip`` maps ``(spec name, image set id)`` to a
        reason that entry must not be touched (stale against the state; two specs may manage
        different attributes of one image set, and one being stale says nothing of the
        other). ``on_result`` runs once per image set, in the worker thread, as soon as it is
        done; ``before_write`` (see :data:`BeforeWrite`) before an image set's first write.
        Both are called from many worker threads at once: they must be thread-safe."""
        skip = skip or {}
        self._before_write = before_write

        def one(entry: dict[str, Any]) -> Outcome:
            spec = specs.get(entry["spec"])   # a saved plan may name a spec removed since
            key = (entry["spec"], entry["image_set_id"])
            if key in skip:
                outcome = Outcome(entry["spec"], entry["datastore_id"], entry["image_set_id"],
                                  STALE, skip[key],
                                  version_before=entry["version_id"])
            elif spec is None:
                outcome = Outcome(entry["spec"], entry["datastore_id"], entry["image_set_id"],
                                  STALE, f"spec {entry['spec']} is not among the specs loaded",
                                  version_before=entry["version_id"])
            elif entry["action"] == "error":
                outcome = Outcome(entry["spec"], entry["datastore_id"], entry["image_set_id"],
                                  FAILED, f"not planned: {entry['error']}")
            else:
                outcome = self.apply_one(entry, spec)
            return finish(outcome, spec)

        def finish(outcome: Outcome, spec: Spec | None) -> Outcome:
            if outcome.status in (FAILED, STALE, MISSING) and self.options.fail_fast:
                self.halt(f"--fail-fast after {outcome.spec} ({outcome.status})")
            if on_result is not None:
                try:
                    on_result(outcome, spec)
                except BaseException:
                    # The caller could not record it (the state cannot be saved): what
                    # cannot be recorded must not be done; stop every further write.
                    self.halt("the state could not be saved")
                    raise
            return outcome

        following: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for entry in plan["image_sets"]:
            if entry.get("after_study"):
                following.setdefault((entry["datastore_id"], entry["after_study"]),
                                     []).append(entry)

        def group(item: dict[str, Any]) -> list[Outcome]:
            outcomes = self.apply_group(item, specs, skip)
            done = []
            for entry in following.get((item["datastore_id"], item["study"]), []):
                member = next((o for o in outcomes if (o.spec, o.image_set_id)
                               == (entry["spec"], entry["image_set_id"])), None)
                if member is not None and member.status not in (APPLIED, UNCHANGED):
                    continue        # the member's outcome says why nothing more was sent
                done.append(self._after_study(entry, specs, skip, member))
                if member is not None and done[-1].status in (APPLIED, UNCHANGED):
                    outcomes.remove(member)   # one outcome for the image set: the merged one
            return [finish(o, o.record_spec or specs.get(o.spec)) for o in outcomes + done]

        # Pipelining: many image sets are in progress at once, so one waiting for its
        # asynchronous update never holds back the next update (the pacer alone sets the
        # update rate); the heavy part, reading and diffing metadata, is bounded apart.
        with ThreadPoolExecutor(max_workers=max(1, self.options.in_flight)) as pool:
            grouped = pool.map(group, plan.get("groups", []))
            alone = [e for e in plan["image_sets"] if not e.get("after_study")]
            return list(pool.map(one, alone)) + [o for g in grouped for o in g]

    def _after_study(self, entry: dict[str, Any], specs: dict[str, Spec],
                     skip: dict[tuple[str, str], str], member: Outcome | None) -> Outcome:
        """An entry's own (Series/Instance) requests, sent once its study update is verified,
        on the version that update made: only the reviewed study update came between."""
        ds, image_set_id = entry["datastore_id"], entry["image_set_id"]
        spec = specs.get(entry["spec"])
        reason = skip.get((entry["spec"], image_set_id)) or (
            None if spec is not None else f"spec {entry['spec']} is not among the specs loaded")
        if reason or member is None or member.status not in (APPLIED, UNCHANGED):
            return Outcome(entry["spec"], ds, image_set_id, STALE if reason else SKIPPED,
                           reason or "not attempted: the study update it follows did not "
                                     "succeed", version_before=entry["version_id"])
        outcome = self.apply_one(dict(entry, version_id=member.version_after), spec,
                                 announce=False)
        outcome.version_before = member.version_before
        outcome.writes += member.writes
        if outcome.status == UNCHANGED and member.status == APPLIED:
            outcome.status = APPLIED
        return outcome
