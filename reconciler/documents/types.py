"""The documents' types: the plan, the apply/rollback report and the drift report as the
engine hands them to the renderers, the plan file and the event stream.

They are TypedDicts, not classes, because the documents *are* JSON: each is written as it
is (``plan --out``, ``--json``), read back (``show``, ``apply PLANFILE``) and validated against
its JSON Schema in ``schemas/`` (``plan.v1``, ``report.v1``, ``drift.v1``). The types name the
same keys as the schemas, required and optional alike, and ``tests/test_document_types.py``
holds them to it, so a key added to one and not the other fails the suite.
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated
# annotations only (the required keys would all come out required).
from typing import Any, Literal, NotRequired, TypedDict

# -- the plan (schemas/plan.v1.schema.json) --------------------------------------------------
Action = Literal["update", "no-op", "error"]
ChangeOp = Literal["add", "update", "remove", "remove-series", "remove-instance",
                   "restore-series", "restore-instance"]
RemovedAction = Literal["forget", "revert", "error"]


class PlanChange(TypedDict):
    """One attribute-level change, its values as the plan shows them (redacted markers when
    redaction is on)."""

    op: ChangeOp
    level: str
    key: str | None
    vr: str | None
    series: str | None
    instance: str | None
    private: bool
    before: Any
    after: Any


class PlanRequest(TypedDict):
    """One UpdateImageSetMetadata request: payloads as canonical JSON text (or, in a redacted
    public view, ``{"redacted": true, "bytes": n}``)."""

    updatableAttributes: Any
    removableAttributes: Any
    force: bool
    includeStudyImageSets: bool


class PlanEntry(TypedDict):
    """One targeted image set under one spec."""

    spec: str
    spec_digest: str
    datastore_id: str
    image_set_id: str
    version_id: str | None
    action: Action
    force: bool
    include_study_image_sets: bool
    state_serial: int | None
    changes: list[PlanChange]
    before_digest: str | None
    requests: list[PlanRequest]
    error: str | None
    after_study: NotRequired[bool]


class StudyMember(TypedDict):
    """A primary image set a study update changes (``peer``: no spec targets it)."""

    spec: str
    spec_digest: str
    image_set_id: str
    version_id: str
    before_digest: str | None
    state_serial: int | None
    peer: NotRequired[bool]
    changes: NotRequired[list[PlanChange]]


class StudyUpdate(TypedDict):
    """One includeStudyImageSets request for one study (``groups`` in the plan document)."""

    study: str
    datastore_id: str
    leader: str
    members: list[StudyMember]
    changes: list[PlanChange]
    requests: list[PlanRequest]


class PlanSummary(TypedDict):
    update: int
    unchanged: int
    error: int
    attributes_changed: int
    requests: int
    forget: NotRequired[int]
    revert: NotRequired[int]
    move: NotRequired[int]


class RemovedEntry(TypedDict):
    """A (spec, image set) of the state that no spec covers any more (``removed`` in the plan
    document): forgotten, or reverted then forgotten (``removed`` in reconciler.yaml)."""

    spec: str
    spec_digest: str | None
    datastore_id: str
    image_set_id: str
    action: RemovedAction
    reason: str
    state_serial: int
    version_id: str | None
    target_version: str | None
    study: str | None
    changes: list[PlanChange]
    other_changes: list[str]
    note: str | None
    error: str | None


class MovedImageSet(TypedDict):
    datastore_id: str
    image_set_id: str
    state_serial: int


# "from" is a Python keyword: the functional form.
MovedEntry = TypedDict("MovedEntry", {"from": str, "to": str, "image_sets": list[MovedImageSet]})


class PlanLimits(TypedDict):
    """What the plan changes, measured against ``limits`` of reconciler.yaml."""

    image_sets_changed: int
    studies_changed: int
    max_image_sets_changed: int | None
    max_studies_changed: int | None
    protected_changed: list[str]
    allowed: list[str]
    exceeded: list[str]


class PlanStateRef(TypedDict):
    lineage: str | None
    serial: int | None


class NotReread(TypedDict):
    count: int
    note: str


class PlanDocument(TypedDict):
    format_version: str
    reconciler_version: str
    created_at: str
    redacted: bool
    state: PlanStateRef
    summary: PlanSummary
    image_sets: list[PlanEntry]
    not_reread: NotRequired[NotReread]
    groups: NotRequired[list[StudyUpdate]]
    removed: NotRequired[list[RemovedEntry]]
    moved: NotRequired[list[MovedEntry]]
    limits: NotRequired[PlanLimits]
    checksum: str


# -- the apply and rollback report (schemas/report.v1.schema.json) ----------------------------
Status = Literal["applied", "unchanged", "stale", "failed", "skipped", "missing", "moved",
                 "forgotten", "reverted"]


class ReportItem(TypedDict):
    spec: str
    datastore_id: str | None
    image_set_id: str | None
    status: Status
    reason: str | None
    version_before: str | None
    version_after: str | None
    writes: int
    response: dict[str, Any]


class ReportSummary(TypedDict):
    applied: int
    unchanged: int
    stale: int
    failed: int
    skipped: int
    missing: int
    moved: NotRequired[int]
    forgotten: NotRequired[int]
    reverted: NotRequired[int]


class Report(TypedDict):
    format_version: str
    reconciler_version: str
    operation: Literal["apply", "rollback"]
    finished_at: str
    summary: ReportSummary
    image_sets: list[ReportItem]


# -- the drift report (schemas/drift.v1.schema.json) -----------------------------------------
class DriftAttribute(TypedDict):
    path: str
    live: Any
    ignored: bool


class DriftEntry(TypedDict):
    spec: str
    datastore_id: str | None
    image_set_id: str | None
    status: Literal["in-sync", "drifted", "changed-elsewhere", "missing", "not-applied",
                    "orphaned"]
    recorded_version: str | None
    live_version: str | None
    reason: str | None
    attributes: list[DriftAttribute]


# Keys with hyphens: the functional form.
DriftSummary = TypedDict("DriftSummary", {
    "in-sync": int, "drifted": int, "changed-elsewhere": int, "missing": int,
    "not-applied": int, "orphaned": NotRequired[int]})


class DriftDatastoreCheck(TypedDict):
    datastore_id: str
    incremental: bool
    since: str | None
    full_check_at: str | None
    why_full: str | None
    listed_pages: int


class DriftCheck(TypedDict):
    incremental: bool
    since: str | None
    from_checkpoint: int
    from_listing: NotRequired[int]
    index_lag: NotRequired[str | None]
    cannot_see: str | None
    datastores: list[DriftDatastoreCheck]


class DriftReport(TypedDict):
    format_version: str
    reconciler_version: str
    checked_at: str
    redacted: bool
    check: NotRequired[DriftCheck]
    summary: DriftSummary
    image_sets: list[DriftEntry]
