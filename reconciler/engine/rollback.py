"""rollback: revert a spec's image sets to the version recorded before our last apply.

Under the state lock (:func:`~reconciler.engine.operations.locked_state`, taken by the
caller): for each recorded image set, one UpdateImageSetMetadata with ``revertToVersionId``
(a new version with the old content), through the one write (:func:`.sending.send_update`);
then the new version is waited for, its metadata compared with the version reverted to, and
the outcome recorded and saved at once, as apply does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..core import errors
from ..documents.types import Report
from ..healthimaging import waits
from ..healthimaging.api import DELETED, UPDATED, HealthImaging, ImageSet
from ..states import OP_ROLLBACK, ImageSetRecord, State, StateBackend
from .diff import live_values
from .drift import recorded_paths
from .operations import report
from .outcomes import APPLIED, FAILED, MISSING, UNCHANGED, Outcome
from .sending import send_update


@dataclass
class RollbackOptions:
    to_version: str | None = None
    image_set_id: str | None = None
    wait_timeout: float = 600.0
    poll_interval: float = 0.2
    sleep: Callable[[float], None] = time.sleep


def rollback(name: str, hi: HealthImaging, backend: StateBackend, state: State,
             options: RollbackOptions) -> Report:
    """Revert each image set of spec ``name`` to the version recorded before our last apply
    (or ``to_version``) with ``revertToVersionId``, wait, verify, record."""
    records = [r for _, r in state.records(name)
               if options.image_set_id in (None, r.image_set_id)]
    if not records:
        raise errors.StateError(f"no image set of spec {name} is recorded in the state"
                                + (f" with id {options.image_set_id}" if options.image_set_id else ""))
    outcomes = []
    for record in records:
        target = options.to_version or record.version_before
        outcome = Outcome(name, record.datastore_id, record.image_set_id, FAILED)
        try:
            live = hi.get_image_set(record.datastore_id, record.image_set_id)
            if record.version_after is None and live.version_id == target \
                    and live.state != DELETED and not waits.busy(live):
                # A pending record whose write never landed: there is nothing to undo.
                outcome.status, outcome.version_after = UNCHANGED, live.version_id
                outcome.version_before = live.version_id
                outcome.reason = (f"the interrupted write never landed: still at version "
                                  f"{target}")
                outcomes.append(outcome)
                continue
            reverted = revert_image_set(hi, outcome, target, options, live=live)
            paths = recorded_paths(state, record, reverted)
            values = live_values(paths.values(), reverted)
            live_now = {stored: values[path] for stored, path in paths.items()}
            state.put(name, ImageSetRecord(
                datastore_id=record.datastore_id, image_set_id=record.image_set_id,
                version_before=outcome.version_before, version_after=outcome.version_after,
                spec_digest=record.spec_digest,
                hashes=state.hash_values(live_now, record.image_set_id),
                last_operation=OP_ROLLBACK, version_origin=record.origin,
                peer_of=record.peer_of))
            backend.write(state)
            outcome.status = APPLIED
            outcome.reason = f"reverted to the content of version {target}"
        except errors.NotFoundError as exc:
            outcome.status, outcome.reason = MISSING, str(exc)
        except errors.ServiceError as exc:
            outcome.reason = str(exc)
        outcomes.append(outcome)
    return report(outcomes, "rollback")


def revert_image_set(hi: HealthImaging, outcome: Outcome, target: str,
                     options: RollbackOptions, live: ImageSet | None = None,
                     pinned: str | None = None) -> dict[str, Any]:
    """One ``revertToVersionId`` of ``outcome``'s image set to ``target``, sent with
    ``latestVersionId`` = its live version (``pinned``: that must be this very version, else
    a :class:`errors.ConflictError`: it moved since it was reviewed); waited for and verified
    (the new version's metadata must equal the target's). Fills ``outcome``'s versions,
    writes and response; returns the reverted metadata. Raises NotFoundError (missing) or
    another ServiceError (failed)."""
    ds, isid = outcome.datastore_id, outcome.image_set_id
    live = live or hi.get_image_set(ds, isid)
    outcome.version_before = live.version_id
    if live.state == DELETED:
        raise errors.NotFoundError(f"image set {isid} is DELETED")
    if waits.busy(live):
        raise errors.ConflictError(f"image set {isid} is {live.state}/{live.workflow_status}: "
                                   f"busy")
    if pinned is not None and live.version_id != pinned:
        raise errors.ConflictError(f"image set {isid} moved to version {live.version_id} since "
                                   f"the plan (version {pinned})")
    try:   # the image set is there; a version that is not is a failure, not "missing"
        hi.get_image_set(ds, isid, target)
    except errors.NotFoundError:
        raise errors.ServiceError(f"image set {isid} has no version {target} to revert "
                                  f"to") from None
    result = send_update(hi, ds, isid, live.version_id, revert_to_version_id=target)
    outcome.writes = 1
    image_set = waits.settle(hi, ds, isid, result.latest_version_id,
                             deadline=time.monotonic() + options.wait_timeout,
                             interval=options.poll_interval, sleep=options.sleep)
    if image_set is None:
        raise errors.ServiceError(f"version {result.latest_version_id} stayed LOCKED for more "
                                  f"than {options.wait_timeout:g}s")
    outcome.response = {"latestVersionId": result.latest_version_id,
                        "imageSetState": image_set.state,
                        "imageSetWorkflowStatus": image_set.workflow_status,
                        "message": image_set.message}
    if image_set.workflow_status != UPDATED:
        raise errors.ServiceError(f"revert ended {image_set.state}/{image_set.workflow_status}"
                                  f": {image_set.message or 'no message'}")
    reverted = hi.get_metadata(ds, isid, result.latest_version_id)
    wanted = hi.get_metadata(ds, isid, target)
    for doc in (reverted, wanted):
        for key in ("DatastoreID", "ImageSetID", "SchemaVersion"):
            doc.pop(key, None)
    if reverted != wanted:
        raise errors.ServiceError(f"verification failed: version {result.latest_version_id} "
                                  f"does not equal version {target}")
    outcome.version_after = result.latest_version_id
    return reverted
