"""apply, for what leaves the specs (:mod:`.removals` plans it): the plan's ``moved`` records
are filed under their new names first, before anything else is checked or sent; its
``removed`` entries go last, once the updates are done: **forget** drops the record (and any
refusal) from the state, **revert** sends ``revertToVersionId`` exactly as ``rollback`` does
(:func:`.rollback.revert_image_set`), on the version the plan pinned, then drops the record.

Both run under the state lock the caller holds and save the state at once (a revert after
each image set, as every write of ours). A saved plan is applied exactly: a move or an entry
whose record changed since the plan (its serial), whose spec came back or changed, or whose
image set moved on since the plan pinned it, is **stale** and nothing is done to it.
"""

from __future__ import annotations

from typing import Callable

from ..core import errors
from ..documents.types import PlanDocument, RemovedEntry
from ..healthimaging.api import HealthImaging
from ..spec.types import Spec
from ..states import ImageSetRecord, State, StateBackend
from .outcomes import (
    FAILED, FORGOTTEN, MISSING, MOVED, REVERTED, SKIPPED, STALE, UNCHANGED, Outcome)
from .rollback import RollbackOptions, revert_image_set
from .sending import retried

def apply_moves(plan: PlanDocument, state: State, backend: StateBackend) -> list[Outcome]:
    """File the records of each renamed spec under its new name (one state write for all),
    when they are still the records the plan saw; already moved is fine, anything else is
    stale (and so are the plan's entries of the new name, whose records are then missing)."""
    outcomes, changed = [], False
    for move in plan.get("moved", []):
        old, new = move["from"], move["to"]
        reviewed = {i["image_set_id"]: i["state_serial"] for i in move["image_sets"]}
        under_old = {r.image_set_id: r for _, r in state.records(old)}
        under_new = {r.image_set_id: r for _, r in state.records(new)}
        if {i: r.serial for i, r in under_old.items()} == reviewed and \
                not reviewed.keys() & under_new.keys():
            state.rename(old, new)
            status, reason, changed = MOVED, f"its record moved from spec {old} (moved in " \
                                             f"reconciler.yaml)", True
        elif not under_old and all(i in under_new and under_new[i].serial == serial
                                   for i, serial in reviewed.items()):
            status, reason = UNCHANGED, f"its record was moved from spec {old} already"
        else:
            status, reason = STALE, (f"the records of spec {old} (or {new}) changed since the "
                                     f"plan was made; plan again")
        for item in move["image_sets"]:
            record = under_old.get(item["image_set_id"]) or under_new.get(item["image_set_id"])
            version = record.version_after if record is not None else None
            outcomes.append(Outcome(new, item["datastore_id"], item["image_set_id"], status,
                                    reason, version_before=version, version_after=version))
    if changed:
        backend.write(state)
    return outcomes


def stale_removal(entry: RemovedEntry, record: ImageSetRecord | None,
                  specs: dict[str, Spec]) -> str | None:
    """Why a ``removed`` entry must not be applied now (None: it may)."""
    if record is None or record.serial != entry["state_serial"]:
        return "its record in the state changed since the plan was made; plan again"
    spec = specs.get(entry["spec"])
    if spec is not None and entry["spec_digest"] is None:
        return f"spec {entry['spec']} is in the specs again; plan again"
    if spec is not None and spec.digest != entry["spec_digest"]:
        return f"spec {entry['spec']} changed since the plan was made; plan again"
    return None


def apply_removed(plan: PlanDocument, specs: dict[str, Spec], hi: HealthImaging,
                  backend: StateBackend, state: State, options: RollbackOptions,
                  done: Callable[[Outcome], None],
                  halted: Callable[[], str | None] = lambda: None) -> list[Outcome]:
    """Forget or revert each ``removed`` entry, saving the state after each; ``done`` is told
    each outcome once it is saved. ``halted``: why no further write may go out (the updates
    met AccessDenied, a quota, --fail-fast or a state that cannot be saved)."""
    outcomes: list[Outcome] = []
    stopped: str | None = None
    for entry in plan.get("removed", []):
        name, isid = entry["spec"], entry["image_set_id"]
        record = state.get(name, isid)
        kept = record.version_after if record is not None else None
        outcome = Outcome(name, entry["datastore_id"], isid, FAILED,
                          version_before=kept, version_after=kept)
        why, stop = stale_removal(entry, record, specs), stopped or halted()
        if stop:
            outcome.status, outcome.reason = SKIPPED, f"not attempted: {stop}"
        elif why:
            outcome.status, outcome.reason = STALE, why
        elif entry["action"] == "error":
            outcome.reason = f"not planned: {entry['error']}"
        elif entry["action"] == "forget":
            _forget(state, backend, name, isid)
            outcome.status = FORGOTTEN
            outcome.reason = f"{entry['reason']}: its record left the state; the metadata " \
                             f"stays as it is"
        else:
            stopped = _revert(hi, backend, state, entry, outcome, options)
        outcomes.append(outcome)
        done(outcome)
    return outcomes


def _forget(state: State, backend: StateBackend, name: str, image_set_id: str) -> None:
    state.remove(name, image_set_id)
    state.forgive(name, image_set_id)
    backend.write(state)


def _revert(hi: HealthImaging, backend: StateBackend, state: State, entry: RemovedEntry,
            outcome: Outcome, options: RollbackOptions) -> str | None:
    """The reviewed revert: on the version the plan pinned, to the version it showed. Returns
    why no further write may go out (AccessDenied, a quota), or None."""
    outcome.version_after = None
    try:
        revert_image_set(hi, outcome, entry["target_version"], options,
                         pinned=entry["version_id"])
    except errors.ConflictError as exc:
        if retried(exc):     # the SDK sent it twice: the first may have landed
            outcome.reason = (f"{exc}: the revert may have landed behind an error; its record "
                              f"is kept, and the next plan shows what is left to revert")
        else:
            outcome.status = STALE
            outcome.reason = (f"{exc.message}: the revert was reviewed on version "
                              f"{entry['version_id']}; plan again")
        return None
    except errors.NotFoundError as exc:
        outcome.status, outcome.reason = MISSING, str(exc)
        return None
    except errors.ServiceError as exc:
        outcome.reason = str(exc)
        if isinstance(exc, (errors.AccessDeniedError, errors.QuotaExceededError)):
            return f"{exc.code} on an earlier image set"
        return None
    _forget(state, backend, entry["spec"], entry["image_set_id"])
    outcome.status = REVERTED
    outcome.reason = (f"{entry['reason']}: reverted to the content of version "
                      f"{entry['target_version']}; its record left the state")
    return None
