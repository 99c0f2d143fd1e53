"""The commands that write: apply, rollback and drift (its checkpoint), around the state and
its lock.

:func:`locked_state` is the one place the state lock is taken: apply and rollback run inside
it from the CLI (which plans, shows and asks for confirmation while holding it, as Terraform
does), and :func:`run_drift` inside it on its own. Under it, :func:`apply_plan` and
:func:`reconciler.engine.rollback.rollback` save the state after **every** image set
(atomically, by the backend), so a failure half way loses nothing already done and a re-run
converges. Each returns a report document; rendering is the caller's.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..core import errors
from ..core.packed import PackedList
from ..dicom.redact import Redactor
from ..documents import plans
from ..documents.types import DriftReport, PlanDocument, Report, ReportItem
from ..healthimaging.api import HealthImaging
from ..spec.types import Spec
from ..states import OP_APPLY, ImageSetRecord, Refusal, State, StateBackend
from .applier import Applier, ApplyOptions
from .diff import desired_values
from .drift import DriftOptions
from .drift import check as drift_check
from .outcomes import (
    APPLIED, FAILED, FORGOTTEN, MISSING, MOVED, REVERTED, SKIPPED, STALE, UNCHANGED, Outcome)

REPORT_FORMAT = "1"

log = logging.getLogger(__name__)


class GroupCommit:
    """Saves the state for many worker threads at once, none of them going on before what it
    changed is on disk (the applier's rule: what cannot be recorded is not done).

    A worker changes the state and calls :meth:`save`: the first to get the writer's lock
    writes the state as it is by then, which holds the changes of every worker that made one
    before; those find the state saved (:attr:`State.unsaved`) and return without a write of
    their own (a database's group commit). With dozens of image sets in flight, one write a
    few milliseconds long covers several of them instead of queueing one write each, and no
    write holds nothing new (every serial the run takes has a record or a refusal in it)."""

    def __init__(self, state: State, backend: StateBackend):
        self._state, self._backend = state, backend
        self._writer = threading.Lock()

    def save(self) -> None:
        """Call after changing the state; returns once the change is saved (or raises)."""
        with self._writer:
            if self._state.unsaved:
                self._backend.write(self._state)


@contextmanager
def locked_state(backend: StateBackend, operation: str, timeout: float = 0.0,
                 open_keys: bool = True) -> Iterator[State]:
    """Hold the state lock for ``operation`` and yield the state as stored (a new one when
    none is yet), its keys opened (unless ``open_keys`` is false: an operation that compares
    nothing); the lock is released however the block ends. Raises LockError when another
    run holds it past ``timeout`` seconds (``held``) or it cannot be taken at all, and
    KeyUnavailableError when the state's key cannot be had: before anything is compared."""
    with backend.lock(operation, timeout=timeout):
        state = backend.read() or backend.new_state()
        if open_keys:
            state.open_keys()
        yield state


def apply_record(state: State, spec: Spec, datastore_id: str, image_set_id: str,
                 version_before: str, version_after: str | None,
                 earlier: ImageSetRecord | None = None,
                 peer_of: str | None = None) -> ImageSetRecord:
    """The record of an apply of ``spec``: the keyed hashes of its desired values (a pending
    one, before its write, has ``version_after`` None). ``earlier``: the record this one
    replaces, whose origin (the version before our first write) it keeps; ``peer_of``: the
    leader of the study update that changed this peer."""
    return ImageSetRecord(
        datastore_id=datastore_id, image_set_id=image_set_id, version_before=version_before,
        version_after=version_after, spec_digest=state.spec_digest(spec.digest),
        hashes=state.hash_values(desired_values(spec.attributes), image_set_id),
        last_operation=OP_APPLY,
        version_origin=earlier.origin if earlier is not None else version_before,
        peer_of=peer_of)


def record_for(state: State, spec: Spec, outcome: Outcome,
               earlier: ImageSetRecord | None = None,
               peer_of: str | None = None) -> ImageSetRecord:
    return apply_record(state, spec, outcome.datastore_id, outcome.image_set_id,
                        outcome.version_before or outcome.version_after, outcome.version_after,
                        earlier, peer_of)


def state_serials(state: State) -> Callable[[str, str], int | None]:
    def serial(spec: str, image_set_id: str) -> int | None:
        record = state.get(spec, image_set_id)
        return record.serial if record else None
    return serial


def refusals(state: State) -> Callable[[str, str, str], Refusal | None]:
    """For plan: the refusal the state remembers of this very request (spec, image set,
    canonical request), or None."""
    def refused(spec: str, image_set_id: str, request: str) -> Refusal | None:
        found = state.refusal(spec, image_set_id)
        return found if found is not None \
            and found.request == state.request_hash(request, image_set_id) else None
    return refused


def known_versions(state: State) -> Callable[[str, str, str | None], str | None]:
    """For plan: the version on which the state verified a spec *with this digest* (apply or
    import), or None (no record, another spec digest, or a rollback undid it). With digest
    None: the newest version the spec's record names whatever its digest and last operation
    (a rollback's, an apply of an earlier spec), a version that exists for sure, so a listing
    that shows an older one lags."""
    def known(spec: str, image_set_id: str, digest: str | None) -> str | None:
        record = state.get(spec, image_set_id)
        if record is None:
            return None
        if digest is None:
            return record.version_after or record.version_before
        if record.last_operation != OP_APPLY or record.spec_digest != state.spec_digest(digest):
            return None
        return record.version_after
    return known


def stale_entries(plan: PlanDocument, state: State,
                  specs: dict[str, Spec]) -> dict[tuple[str, str], str]:
    """Entries ``(spec name, image set id)`` of a saved plan that must not be applied, with
    why (Terraform refuses a plan whose state moved; here it is per spec and image set, so
    unrelated applies do not block a plan). Every member of a study update is checked too."""
    stale: dict[tuple[str, str], str] = {}
    for entry in plans.per_image_set(plan):
        image_set_id, name = entry["image_set_id"], entry["spec"]
        key = (name, image_set_id)
        spec = specs.get(name)
        record = state.get(name, image_set_id) if image_set_id else None
        if spec is None:
            stale[key] = f"spec {name} is no longer in the specs"
        elif spec.digest != entry["spec_digest"]:
            stale[key] = f"spec {name} changed since the plan was made"
        elif (record.serial if record else None) != entry["state_serial"] \
                and not _interrupted_attempt(state, record, entry):
            stale[key] = "the state of this image set changed since the plan was made"
    return stale


def _interrupted_attempt(state: State, record: ImageSetRecord | None,
                         entry: dict[str, Any]) -> bool:
    """A pending record (``version_after`` null) left by a run of this very entry that was
    killed around its write: the same plan may go on from there (apply re-reads on the 409 a
    landed write causes, and finds the desired state)."""
    return (record is not None and record.version_after is None
            and record.version_before == entry["version_id"]
            and record.spec_digest == state.spec_digest(entry["spec_digest"]))


def check_plan_lineage(plan: PlanDocument, state: State) -> None:
    lineage = plan["state"]["lineage"]
    if lineage is not None and lineage != state.lineage:
        raise errors.StalePlanError(
            f"the plan was made against another state (lineage {lineage}, the state is "
            f"{state.lineage}); plan again")
    if not plans.is_applicable(plan):
        raise errors.PlanFileError("this plan was printed with redaction and holds no "
                                   "payloads; save one with plan --out")


def report_item(o: Outcome) -> ReportItem:
    return {"spec": o.spec, "datastore_id": o.datastore_id, "image_set_id": o.image_set_id,
            "status": o.status, "reason": o.reason or None, "version_before": o.version_before,
            "version_after": o.version_after, "writes": o.writes, "response": o.response or None}


def report(outcomes: list[Outcome], operation: str, consume: bool = False) -> Report:
    """The report document of ``outcomes``; ``consume``: the list is the caller's to give
    up, and each outcome goes as its item is made, the items packed (100,000 outcomes and
    their items as dicts, ~1 KB each, were most of what apply held at its end)."""
    counts = {s: sum(1 for o in outcomes if o.status == s)
              for s in (APPLIED, UNCHANGED, STALE, FAILED, SKIPPED, MISSING)}
    # What leaves the specs, counted only when there is any (reports before it have none).
    counts.update({s: n for s in (MOVED, FORGOTTEN, REVERTED)
                   if (n := sum(1 for o in outcomes if o.status == s))})
    items: list[ReportItem] | PackedList
    if consume:
        items = PackedList(canonical=False)
        outcomes.reverse()
        while outcomes:
            items.append(report_item(outcomes.pop()))
    else:
        items = [report_item(o) for o in outcomes]
    return {
        "format_version": REPORT_FORMAT, "reconciler_version": __version__,
        "operation": operation,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": counts,
        "image_sets": items,
    }


def report_failed(doc: Report) -> bool:
    s = doc["summary"]
    return bool(s[FAILED] or s[STALE] or s[MISSING] or s[SKIPPED])


def apply_plan(plan: PlanDocument, specs: list[Spec], hi: HealthImaging, backend: StateBackend,
               state: State, options: ApplyOptions, saved: bool,
               on_result: Callable[[ReportItem], None] | None = None) -> Report:
    """Apply ``plan`` under a lock the caller holds; save the state after each image set, then
    tell ``on_result`` (its report item: progress, event streams). Renamed specs' records are
    moved first, what leaves the specs is forgotten or reverted last (:mod:`.retirement`)."""
    from . import limits, retirement   # (it reverts as rollback does, which reports here)
    from .rollback import RollbackOptions

    by_name = {s.name: s for s in specs}
    skip: dict[tuple[str, str], str] = {}
    if saved:
        check_plan_lineage(plan, state)
        limits.enforce(plan)          # a plan printed beyond its limits is never applied
    moved = retirement.apply_moves(plan, state, backend)
    if saved:
        skip = stale_entries(plan, state, by_name)

    # The peers of study updates (spec, image set) → their leader, recorded with the record.
    peers = {(m["spec"], m["image_set_id"]): group["leader"]
             for group in plan.get("groups", []) for m in group["members"] if m.get("peer")}
    # The records pending writes replaced, to put back when the write does not succeed.
    replaced: dict[tuple[str, str], ImageSetRecord | None] = {}
    saver = GroupCommit(state, backend)
    told = threading.Lock()        # on_result (progress, event streams): one at a time

    def pending(spec: Spec, ds: str, image_set_id: str, version: str) -> None:
        """Before the first write: record that it is about to go out on ``version``, so a run
        killed after the write landed and before its outcome was saved still knows where
        rollback must go back to. Only a crash ever leaves such a record in the state."""
        key = (spec.name, image_set_id)
        existing = state.get(*key)
        if key not in replaced:
            replaced[key] = existing
        if existing is not None and _interrupted_attempt(state, existing, {
                "version_id": version, "spec_digest": spec.digest}):
            return      # an earlier, interrupted run of this very write: already recorded
        state.put(spec.name, apply_record(state, spec, ds, image_set_id, version, None,
                                          existing, peers.get(key)))
        saver.save()

    def tell(outcome: Outcome) -> None:
        if on_result is not None:
            with told:
                on_result(report_item(outcome))

    def save(outcome: Outcome, spec: Spec | None) -> None:
        record_outcome(outcome, spec)
        tell(outcome)

    def record_outcome(outcome: Outcome, spec: Spec | None) -> None:
        if outcome.status not in (APPLIED, UNCHANGED) or not outcome.version_after \
                or spec is None:
            key = (outcome.spec, outcome.image_set_id)
            changed = False
            if key in replaced:       # the write did not succeed: what was there stays
                previous = replaced.pop(key)
                if previous is None:
                    state.remove(*key)
                else:
                    state.put(outcome.spec, previous)
                changed = True
            if outcome.refused is not None:   # the next plan must not propose it again
                kind, version, request = outcome.refused
                state.refuse(*key, Refusal(request=state.request_hash(request, key[1]),
                                           version=version, kind=kind))
                changed = True
            if changed:
                saver.save()
            return
        forgiven = state.forgive(spec.name, outcome.image_set_id)   # it went through
        key = (spec.name, outcome.image_set_id)
        # What was there before this run's pending record, if it made one.
        made_pending = key in replaced
        existing = replaced.pop(key) if made_pending else state.get(*key)
        record = record_for(state, spec, outcome, existing, peers.get(key))
        if outcome.status == UNCHANGED and existing is not None:
            # Nothing was written: the record of the operation that did write stays, above
            # all its version_before (what rollback reverts to); a record saying exactly
            # what is already there is not written again (a no-op apply moves no serial).
            if (existing.last_operation == OP_APPLY
                    and (existing.datastore_id, existing.version_after, existing.spec_digest,
                         dict(existing.hashes))
                    == (record.datastore_id, record.version_after, record.spec_digest,
                        dict(record.hashes))):
                if made_pending:
                    state.put(spec.name, existing)
                if made_pending or forgiven:
                    saver.save()
                return
            record = replace(record, version_before=existing.version_before)
        state.put(spec.name, record)
        saver.save()

    options.saved_plan = saved
    for outcome in moved:
        tell(outcome)
    applier = Applier(hi, options)
    if options.fail_fast and any(o.status == STALE for o in moved):
        applier.halt("--fail-fast after a stale move")
    outcomes = applier.apply(plan, by_name, on_result=save, skip=skip, before_write=pending)
    outcomes += retirement.apply_removed(
        plan, by_name, hi, backend, state,
        RollbackOptions(wait_timeout=options.wait_timeout, poll_interval=options.poll_interval,
                        sleep=options.sleep),
        done=tell, halted=lambda: applier.halted)
    outcomes[:0] = moved
    del moved
    return report(outcomes, "apply", consume=True)


def run_drift(hi: HealthImaging, backend: StateBackend, specs: list[Spec],
              is_ignored: Callable[[str, str], bool],
              make_redactor: Callable[[State | None], Redactor],
              options: DriftOptions, lock_timeout: float = 0.0,
              renames: dict[str, str] | None = None) -> DriftReport:
    """drift, around the state: the check and, when there is a state, the checkpoint it
    establishes saved like apply saves (under the state lock, atomically). A lock held by
    another run fails as for apply; a lock that cannot be taken at all (a read-only role or
    directory) still checks, from the saved checkpoint, and saves none. ``renames``: the
    ``moved`` entries of reconciler.yaml (old → new name), done on the view drift checks, so
    a renamed spec's records are checked under its new name before an apply moves them."""
    from ..states.edits import moved_view

    def check(state: State, keyed: bool = True):
        view = moved_view(state, renames)[0] if renames else state
        return drift_check(hi, view, specs, is_ignored, make_redactor(state if keyed else None),
                           options)

    if backend.read() is None:
        # Nothing recorded: nothing to check against, nothing to remember, no state written
        # (and no key needed: nothing is compared).
        return check(State.new(), keyed=False)[0]
    locked = False
    try:
        with locked_state(backend, "drift", lock_timeout) as state:
            locked = True
            report, checkpoints = check(state)
            if len(state):
                _save_checkpoints(backend, state, checkpoints)
            return report
    except errors.LockError as exc:
        if locked or exc.held:     # held by another run: as apply, fail
            raise
        log.warning("%s; drift checked without saving its checkpoint", exc)
        state = backend.read() or backend.new_state()
        state.open_keys()          # no key, no check: never in sync without one
        return check(state)[0]


def _save_checkpoints(backend: StateBackend, state: State,
                      checkpoints: dict[str, Any]) -> None:
    """Save what a drift established. A failed save costs only the checkpoint (the next drift
    checks in full); the report is complete either way, so it is a warning, and the errored
    copy the backend kept (the old state plus a checkpoint) is removed: it holds nothing an
    apply recorded and must not be put in place of a newer state."""
    state.set_drift_checkpoints(checkpoints)
    state.mark_checked()
    try:
        backend.write(state)
    except errors.StateError as exc:
        if exc.errored_path is not None:
            Path(exc.errored_path).unlink(missing_ok=True)
        log.warning("the drift checkpoint was not saved, so the next drift checks in full: %s",
                    str(exc).split("; the new state", 1)[0])
