"""The NDJSON event stream (``--json-stream`` on plan, apply and drift): one JSON object per
line on stdout, for CI tools and dashboards that follow a run as it happens, in the spirit
of Terraform's machine-readable UI (``terraform plan -json``).

Every event has ``@timestamp`` (UTC, ISO 8601), ``@message`` (a human line that never holds a
metadata value) and ``type``; the other fields depend on the type and are listed in
docs/gitops.md (NDJSON events). Events are built from the same documents the other renderers read — the plan
document, the apply report, the drift report — so the values they carry are exactly the ones
``plan`` would print: redacted markers when redaction is on, and never a request payload.

apply: ``apply_start`` is emitted for every image set to update before the run; then, as each
image set finishes (``engine.operations.apply_plan`` hands its report item to ``on_result``),
its ``apply_progress`` and ``apply_complete`` / ``apply_errored``; the summary at the end.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from . import plans
from .render import drift_summary_line, summary_line
from .types import DriftReport, PlanChange, PlanDocument, Report, ReportItem

Emit = Callable[[str], None]
OK_STATUSES = ("applied", "unchanged", "moved", "forgotten", "reverted")
DRIFT_STATUSES = ("drifted", "missing", "orphaned")


def event(kind: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"@timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "@message": message, "type": kind, **fields}


def dumps(ev: dict[str, Any]) -> str:
    """One line of NDJSON (no newline inside: json.dumps escapes control characters)."""
    return json.dumps(ev, ensure_ascii=False, separators=(",", ":"))


def write(events: Iterable[dict[str, Any]], emit: Emit) -> None:
    for ev in events:
        emit(dumps(ev))


def _change(change: PlanChange) -> dict[str, Any]:
    return {k: change.get(k) for k in ("op", "level", "series", "instance", "key", "vr",
                                       "before", "after")}


# -- plan ----------------------------------------------------------------------------------------
def plan_events(doc: PlanDocument) -> Iterator[dict[str, Any]]:
    for entry in plans.per_image_set(doc):
        if entry["action"] == plans.ACTION_NOOP:
            continue
        where = f"{entry['spec']}: image set {entry['image_set_id']}"
        if entry["action"] == plans.ACTION_ERROR:
            yield event("planned_change", f"{where}: cannot be planned", action="error",
                        spec=entry["spec"], datastore_id=entry["datastore_id"],
                        image_set_id=entry["image_set_id"], error=entry["error"], changes=[])
            continue
        grouped = {"group": entry["group"]} if "group" in entry else {}
        yield event("planned_change",
                    f"{where}: update ({len(entry['changes'])} attribute changes"
                    + (f", study update {entry['group']})" if grouped else ")"),
                    action="update", spec=entry["spec"], datastore_id=entry["datastore_id"],
                    image_set_id=entry["image_set_id"], version_id=entry["version_id"],
                    requests=len(entry["requests"]), **grouped,
                    changes=[_change(c) for c in entry["changes"]])
    for move in doc.get("moved", []):
        for item in move["image_sets"]:
            yield event("planned_change", f"{move['from']}: image set {item['image_set_id']}: "
                        f"moved to {move['to']}", action="move", spec=move["to"],
                        moved_from=move["from"], datastore_id=item["datastore_id"],
                        image_set_id=item["image_set_id"], changes=[])
    for entry in doc.get("removed", []):
        where = f"{entry['spec']}: image set {entry['image_set_id']}"
        fields = {"error": entry["error"]} if entry["action"] == plans.ACTION_ERROR else {
            "version_id": entry["version_id"], "target_version": entry["target_version"]}
        yield event("planned_change", f"{where}: {entry['action']} ({entry['reason']})",
                    action=entry["action"], spec=entry["spec"],
                    datastore_id=entry["datastore_id"], image_set_id=entry["image_set_id"],
                    reason=entry["reason"], **fields,
                    changes=[_change(c) for c in entry["changes"]])
    s = doc["summary"]
    leaving = {k: s[k] for k in ("forget", "revert", "move") if k in s}
    yield event("change_summary", summary_line(doc), operation="plan", redacted=doc["redacted"],
                update=s["update"], unchanged=s["unchanged"], error=s["error"],
                attributes_changed=s["attributes_changed"], **leaving)


# -- apply ---------------------------------------------------------------------------------------
def apply_start_events(plan: PlanDocument) -> Iterator[dict[str, Any]]:
    for entry in plans.per_image_set(plan):
        if entry["action"] == plans.ACTION_UPDATE:
            yield event("apply_start",
                        f"{entry['spec']}: image set {entry['image_set_id']}: applying",
                        spec=entry["spec"], datastore_id=entry["datastore_id"],
                        image_set_id=entry["image_set_id"], version_id=entry["version_id"],
                        requests=len(entry["requests"]))


def apply_item_events(item: ReportItem, done: int, total: int) -> Iterator[dict[str, Any]]:
    """The events of one finished image set, emitted as soon as it is done."""
    where = f"{item['spec']}: image set {item['image_set_id']}"
    common = {"spec": item["spec"], "datastore_id": item["datastore_id"],
              "image_set_id": item["image_set_id"]}
    yield event("apply_progress", f"{done}/{total} image sets done", done=done, total=total,
                **common)
    if item["status"] in OK_STATUSES:
        yield event("apply_complete", f"{where}: {item['status']}", status=item["status"],
                    version_before=item["version_before"],
                    version_after=item["version_after"], writes=item["writes"], **common)
    else:
        yield event("apply_errored", f"{where}: {item['status']}: {item['reason']}",
                    status=item["status"], reason=item["reason"],
                    version_before=item["version_before"], writes=item["writes"], **common)


def apply_summary_events(report: Report) -> Iterator[dict[str, Any]]:
    s = report["summary"]
    done_text = ", ".join(f"{s[k]} {k}" for k in s if s[k]) or "nothing to do"
    yield event("change_summary", f"{report['operation'].capitalize()}: {done_text}.",
                operation=report["operation"], **s)


def apply_result_events(report: Report) -> Iterator[dict[str, Any]]:
    """Every event of a finished run, from its report (for a report read after the fact)."""
    items = report["image_sets"]
    for done, item in enumerate(items, start=1):
        yield from apply_item_events(item, done, len(items))
    yield from apply_summary_events(report)


# -- drift ---------------------------------------------------------------------------------------
def drift_events(report: DriftReport) -> Iterator[dict[str, Any]]:
    for item in report["image_sets"]:
        if item["status"] not in DRIFT_STATUSES:
            continue
        drifted = [a for a in item["attributes"] if not a["ignored"]]
        yield event("drift_detected",
                    f"{item['spec']}: image set {item['image_set_id']}: {item['status']}"
                    + (f" ({len(drifted)} attributes)" if drifted else ""),
                    spec=item["spec"], datastore_id=item["datastore_id"],
                    image_set_id=item["image_set_id"], status=item["status"],
                    recorded_version=item["recorded_version"],
                    live_version=item["live_version"], reason=item["reason"],
                    attributes=item["attributes"])
    yield event("change_summary", drift_summary_line(report), operation="drift",
                redacted=report["redacted"], **report["summary"])
