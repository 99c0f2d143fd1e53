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
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Callable, Iterator

from ..core import errors
from ..core.canonical import canonical_text
from ..core.pools import bounded_map
from ..healthimaging import waits
from ..healthimaging.api import DELETED, UPDATE_FAILED, UPDATED, HealthImaging
from ..spec.config import PrimaryPolicy
from ..spec.types import Spec
from . import study_updates
from .diff import Change, ImageSetProblem, diff
from .entries import before_digest
from .outcomes import (
    APPLIED, FAILED, MISSING, SKIPPED, STALE, UNCHANGED, Outcome, Refused, Stop, response_elements)
from .payloads import Request, build_requests, schema_version_of
from .reading import Waiting, read_pinned
from .sending import RETRIED_AFTER_REREAD, BeforeWrite, retried, send_update
from .study_apply import StudyApplication

log = logging.getLogger(__name__)

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


def flatten(payload: str | None, kind: str) -> set[tuple[str, str, str]]:
    """The leaves of a request document as ``(kind, path, canonical JSON value)``; an empty
    series / instance object is itself a leaf (a whole removal)."""
    if not payload:
        return set()
    items: set[tuple[str, str, str]] = set()

    def walk(node: Any, path: str, parent: str) -> None:
        if parent in ("DICOM", "DICOMVRs") or not isinstance(node, dict) or not node:
            items.add((kind, path, canonical_text(node)))
            return
        for key, value in node.items():
            if key != "SchemaVersion":
                walk(value, f"{path}/{key}", path.rsplit("/", 1)[-1])

    walk(json.loads(payload), "", "")
    return items


class Applier(StudyApplication):
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
            raise Stop(FAILED, f"version {version} stayed LOCKED for more than "
                                f"{self.options.wait_timeout:g}s")
        response.update({"imageSetState": image_set.state,
                         "imageSetWorkflowStatus": image_set.workflow_status,
                         "message": image_set.message})
        if image_set.workflow_status == UPDATE_FAILED:
            raise Refused("UPDATE_FAILED", version,
                           f"UPDATE_FAILED: {image_set.message or 'no message'}")
        if image_set.workflow_status != UPDATED:
            raise Stop(FAILED, f"version {version} ended {image_set.state}/"
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
                raise Stop(FAILED, f"image set {image_set_id} is a primary image set: {refusal}")
            deferred, _ = study_updates.split(changes, self.options.primary)
            if deferred:
                raise Stop(STALE, f"the Patient/Study values of image set {image_set_id} moved "
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
            raise Stop(FAILED, f"verification failed: {len(left)} managed attribute(s) "
                                f"differ on version {version}: "
                                + ", ".join(c.path for c in left[:5]))

    def _back_off(self, exc: errors.ServiceError, attempt: int) -> bool:
        """After a write that failed with one of ``RETRIED_AFTER_REREAD``: give up after the last attempt,
        else sleep (exponential, jittered). True when the write may have landed unseen (a
        500, a lost connection, or a 409 met by botocore's retry of it)."""
        if attempt >= self.options.max_attempts:
            raise Stop(FAILED, f"gave up after {attempt} attempts: {exc}") from exc
        self.options.sleep(self.options.backoff_base * (2 ** (attempt - 1))
                           * (0.5 + random.random()))
        return not isinstance(exc, errors.ThrottlingError) and (
            not isinstance(exc, errors.ConflictError) or retried(exc))

    def _failure(self, exc: Exception) -> tuple[str, str]:
        """The status and reason an image set stops with."""
        if isinstance(exc, Stop):
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
            raise Refused("ValidationException", version,
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
                    raise Stop(SKIPPED, f"not attempted: {self._halt_reason}")
                if announce and outcome.writes == 0 and unsure_from is None \
                        and announced != version:
                    self._announce(spec, ds, image_set_id, version)
                    announced = version
                try:
                    result = self._send(ds, image_set_id, version, requests[0])
                except RETRIED_AFTER_REREAD as exc:
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
                        raise Stop(STALE, f"the image set moved to version {version} and the "
                                           f"change now differs from the reviewed plan; plan "
                                           f"again")
                    requests = fresh
                    continue
                if outcome.writes == 0:
                    outcome.version_before = version   # what rollback must go back to
                outcome.writes += 1
                outcome.response = response_elements(result)
                self._wait(ds, image_set_id, result.latest_version_id, outcome.response)
                version = result.latest_version_id
                requests = requests[1:]
            # every request landed: verify the managed attributes on the version we made
            self._verify(spec, ds, image_set_id, version)
            outcome.status, outcome.version_after = APPLIED, version
        except (Stop, ImageSetProblem, errors.ServiceError) as exc:
            outcome.status, outcome.reason = self._failure(exc)
            if isinstance(exc, Refused):
                outcome.refused = (exc.kind, exc.version, requests[0].canonical())
        return outcome

    # -- stopping every further write ------------------------------------------------------------
    @property
    def halted(self) -> str | None:
        return self._halt_reason if self._halt.is_set() else None   # why no write may go out

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
        # Study updates first, then the image sets alone, as submitted before; but at most a
        # few times the workers' number waiting in the pool at once (at 100,000 image sets,
        # a future each, all submitted up front, was ~100 MB).
        tasks: Iterator[tuple[Callable[[dict[str, Any]], Any], dict[str, Any]]] = chain(
            ((group, item) for item in plan.get("groups", [])),
            ((one, e) for e in plan["image_sets"] if not e.get("after_study")))
        grouped: list[Outcome] = []
        alone: list[Outcome] = []
        workers = max(1, self.options.in_flight)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fn, result in bounded_map(pool, tasks, window=4 * workers):
                if fn is group:
                    grouped += result
                else:
                    alone.append(result)
        return alone + grouped

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

