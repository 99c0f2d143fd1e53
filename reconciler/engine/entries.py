"""Plan entries: the part of the plan document one image set contributes, built from its
changes (:mod:`.diff`) and requests (:mod:`.payloads`). The planner builds one per targeted
image set; study updates rebuild them for the members of a study. The document's shape is
:mod:`reconciler.documents.plans`'s (and ``schemas/plan.v1.schema.json``)."""

from __future__ import annotations

from typing import Any

from ..core.canonical import digest
from ..dicom.redact import Redactor
from ..documents import plans
from ..documents.types import PlanChange, PlanEntry
from .diff import Change
from .payloads import SCHEMA_VERSION, build_requests
from .reading import Assignment


def before_digest(changes: list[Change]) -> str:
    return digest([[c.path, c.before] for c in changes])


def change_entry(change: Change, redactor: Redactor) -> PlanChange:
    return {"op": change.op, "level": change.level, "key": change.key, "vr": change.vr,
            "series": change.series, "instance": change.instance, "private": change.private,
            "before": redactor.show(change.key, change.before, change.vr, change.private),
            "after": redactor.show(change.key, change.after, change.vr, change.private)}


def plan_entry(assignment: Assignment, version_id: str | None, changes: list[Change],
               redactor: Redactor, error: str | None = None,
               schema_version: Any = SCHEMA_VERSION, primary: bool = False) -> PlanEntry:
    """``schema_version``: the SchemaVersion of the document the diff was made against, which
    the payloads repeat (see :mod:`reconciler.engine.payloads`). ``primary``: the image set is a
    primary one, whose Patient/Study changes a study update carries (:mod:`.study_updates`), so its
    own requests never go study-wide."""
    spec = assignment.spec
    requests = [] if error else build_requests(
        changes, force=spec.force,
        include_study_image_sets=spec.include_study_image_sets and not primary,
        schema_version=schema_version)
    return {
        "spec": spec.name, "spec_digest": spec.digest,
        "datastore_id": assignment.datastore_id, "image_set_id": assignment.image_set_id,
        "version_id": version_id,
        "action": plans.ACTION_ERROR if error else
        (plans.ACTION_UPDATE if changes else plans.ACTION_NOOP),
        "force": bool(spec.force and any(r.force for r in requests)),
        "include_study_image_sets": spec.include_study_image_sets and not primary,
        "state_serial": None,  # filled in by plan_one from the state
        "changes": [change_entry(c, redactor) for c in changes],
        "before_digest": before_digest(changes) if changes else None,
        "requests": [r.to_json() for r in requests],
        "error": error,
    }
