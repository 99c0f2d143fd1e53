"""What applying one image set came to: its :class:`Outcome`, the statuses an outcome can
have, and :class:`Stop`, which ends an image set's attempt with one of them. The applier
(:mod:`.applier`, :mod:`.study_apply`) makes outcomes; :mod:`.operations` records them in the
state and reports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..healthimaging.api import UpdateResult
from ..spec.types import Spec

APPLIED, UNCHANGED, STALE, FAILED, SKIPPED, MISSING = (
    "applied", "unchanged", "stale", "failed", "skipped", "missing")
# What leaves the specs (:mod:`.retirement`): a record re-filed under a renamed spec, dropped
# from the state, or dropped after its image set was reverted.
MOVED, FORGOTTEN, REVERTED = "moved", "forgotten", "reverted"


@dataclass(slots=True)
class Outcome:
    """What happened to one image set; the report and the state are made from it (one per
    image set of an apply, all held until its report: slotted)."""

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


class Stop(Exception):
    """Stop this image set with an outcome (stale, failed, missing)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class Refused(Stop):
    """The service refused the request itself (UPDATE_FAILED, or a 400 that is no stale
    version): sending it again would fail the same way."""

    def __init__(self, kind: str, version: str, reason: str):
        super().__init__(FAILED, reason)
        self.kind, self.version = kind, version


def response_elements(result: UpdateResult) -> dict[str, Any]:
    """The report's response elements of an UpdateImageSetMetadata answer."""
    return {
        "latestVersionId": result.latest_version_id,
        "imageSetState": result.state,
        "imageSetWorkflowStatus": result.workflow_status,
        "message": result.message,
        "createdAt": result.created_at.isoformat() if result.created_at else None,
        "updatedAt": result.updated_at.isoformat() if result.updated_at else None,
    }
