"""Renderers of the plan *document* (never of engine objects): human text and JSON.

The human form follows Terraform: one block per image set, ``~`` update, ``-`` remove,
``+`` add, old -> new values, grouped by level, and a last line
``Plan: N image sets to update, M unchanged, K attributes changed.``. A study update is one
block naming its members, with ``in R requests (G study updates)`` added to the last line.
Values are printed as the plan document holds them: redacted markers stay as they are.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from ..core.canonical import batched, json_pieces
from . import plans
from .types import (
    DriftReport, MovedEntry, PlanChange, PlanDocument, PlanEntry, RemovedEntry, Report,
    StudyMember, StudyUpdate)

SYMBOL = {"add": "+", "update": "~", "remove": "-", "remove-series": "-", "remove-instance": "-",
          "restore-series": "+", "restore-instance": "+"}
ANSI = {"+": "\x1b[32m", "~": "\x1b[33m", "-": "\x1b[31m"}   # green, yellow, red
RESET = "\x1b[0m"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summary_line(doc: PlanDocument) -> str:
    s = doc["summary"]
    groups = len(doc.get("groups", []))
    grouped = (f" in {_plural(s['requests'], 'request', 'requests')} "
               f"({_plural(groups, 'study update', 'study updates')})" if groups else "")
    leaving = [text for n, text in (
        (s.get("revert", 0), f"{_plural(s.get('revert', 0), 'image set', 'image sets')} to "
                             f"revert"),
        (s.get("forget", 0), f"{s.get('forget', 0)} to forget"),
        (s.get("move", 0), f"{_plural(s.get('move', 0), 'record', 'records')} to move"))
        if n]
    return (f"Plan: {_plural(s['update'], 'image set', 'image sets')} to update{grouped}, "
            f"{s['unchanged']} unchanged, "
            f"{_plural(s['attributes_changed'], 'attribute', 'attributes')} changed"
            + (f"; {', '.join(leaving)}." if leaving else "."))


def format_value(value: Any) -> str:
    if isinstance(value, str) and value.startswith("<redacted ") and value.endswith(">"):
        return value
    return json.dumps(value, ensure_ascii=False)


def _group(change: PlanChange) -> str:
    level = change["level"]
    if level in ("Patient", "Study"):
        return level
    if level == "Series":
        return f"Series {change['series']}"
    return f"Instance {change['instance']} (series {change['series']})"


def _change_line(change: PlanChange) -> str:
    op = change["op"]
    if op == "remove-series":
        return f"- Series {change['series']} (the whole series)"
    if op == "remove-instance":
        return f"- Instance {change['instance']} (the whole instance)"
    if op == "restore-series":
        return f"+ Series {change['series']} (the whole series, restored)"
    if op == "restore-instance":
        return f"+ Instance {change['instance']} (the whole instance, restored)"
    key = change["key"] + (f" ({change['vr']})" if change.get("private") else "")
    if op == "add":
        return f"+ {key}: {format_value(change['after'])}"
    if op == "remove":
        return f"- {key}: {format_value(change['before'])} -> (absent)"
    return f"~ {key}: {format_value(change['before'])} -> {format_value(change['after'])}"


def _style(text: str, symbol: str, color: bool) -> str:
    if not color or symbol not in ANSI:
        return text
    return f"{ANSI[symbol]}{text}{RESET}"


def render_entry(entry: PlanEntry, color: bool = False) -> list[str]:
    where = f"image set {entry['image_set_id']}"
    if entry["action"] == plans.ACTION_ERROR:
        return [_style(f"  # {entry['spec']}: {where}: error: {entry['error']}", "-", color), ""]
    lines = [f"  # {entry['spec']}: {where} (data store {entry['datastore_id']}, "
             f"version {entry['version_id']})",
             _style(f"  ~ {where} {{", "~", color)]
    lines += _change_lines(entry["changes"], color)
    notes = []
    if entry["force"]:
        notes.append("sent with force=true (the spec sets force: true and a change needs it)")
    if entry["include_study_image_sets"]:
        notes.append("sent with includeStudyImageSets=true: applies to every primary image "
                     "set of the study")
    if len(entry["requests"]) > 1:
        notes.append(f"{len(entry['requests'])} sequential requests: the changes exceed the "
                     f"30000-byte document limit")
    lines.extend(f"      # {note}" for note in notes)
    lines.extend(["    }", ""])
    return lines


def group_title(group: StudyUpdate) -> str:
    return (f"study update {group['study']} "
            f"({_plural(len(group['members']), 'primary image set', 'primary image sets')})")


def _member_note(group: StudyUpdate, member: StudyMember) -> str:
    if member["image_set_id"] == group["leader"]:
        return "leader, the request is sent here"
    if member.get("peer"):
        return "no spec targets it: changed for study consistency"
    return "changed by the same request"


def render_group(group: StudyUpdate, color: bool = False) -> list[str]:
    """A study update as one item: its members, the changes the one request carries, and what
    it changes on every other primary image set of the study (before values may differ)."""
    requests = _plural(len(group["requests"]), "request", "requests")
    lines = [f"  # {group_title(group)}: data store {group['datastore_id']}, {requests}"]
    for member in group["members"]:
        owner = f"(record under {member['spec']})" if member.get("peer") else member["spec"]
        lines.append(f"  #   {owner}: image set {member['image_set_id']} "
                     f"(version {member['version_id']}): {_member_note(group, member)}")
    lines.append(_style(f"  ~ {group_title(group)} {{", "~", color))
    lines += _change_lines(group["changes"], color)
    for member in group["members"]:
        if member["image_set_id"] == group["leader"] or "changes" not in member:
            continue
        lines.append(f"      # on image set {member['image_set_id']}"
                     + (":" if member["changes"] else ": no value changes, its version "
                        "still increments"))
        lines += _change_lines(member["changes"], color)
    lines += [f"      # {requests} to image set {group['leader']} with "
              f"includeStudyImageSets=true: HealthImaging applies it to every primary image "
              f"set of the study, atomically", "    }", ""]
    return lines


def moved_lines(move: MovedEntry) -> list[str]:
    count = _plural(len(move["image_sets"]), "image set", "image sets")
    return [f"  # {move['from']} has moved to {move['to']} ({count}): its records in the "
            f"state follow the new name", ""]


OTHER_SHOWN = 10    # paths of other changes a revert makes, listed before "and N more"


def render_removed(entry: RemovedEntry, color: bool = False) -> list[str]:
    """An image set that leaves the specs: forgotten, or reverted (with the managed values it
    changes, and the paths of what else differs: a revert restores the whole document)."""
    where = f"image set {entry['image_set_id']}"
    if entry["action"] == plans.ACTION_ERROR:
        return [_style(f"  # {entry['spec']}: {where}: error: {entry['error']}", "-", color), ""]
    version = f", version {entry['version_id']}" if entry["version_id"] else ""
    lines = [f"  # {entry['spec']}: {where} (data store {entry['datastore_id']}{version}): "
             f"{entry['reason']}"]
    if entry["note"]:
        lines.append(f"  #   {entry['note']}")
    if entry["action"] == plans.ACTION_FORGET:
        lines += [_style(f"  - forget {where}: its record leaves the state; the metadata "
                         f"stays as it is", "-", color), ""]
        return lines
    lines.append(_style(f"  - revert {where} to version {entry['target_version']} {{", "-",
                        color))
    lines += _change_lines(entry["changes"], color)
    if not entry["changes"]:
        lines.append("      # no managed attribute differs from that version")
    other = entry["other_changes"]
    if other:
        shown = ", ".join(other[:OTHER_SHOWN]) + (
            f" and {len(other) - OTHER_SHOWN} more" if len(other) > OTHER_SHOWN else "")
        lines.append(f"      # revertToVersionId restores the whole document of version "
                     f"{entry['target_version']}: it also changes "
                     f"{_plural(len(other), 'item', 'items')} no spec of this one manages: "
                     f"{shown}")
    lines += ["      # then its record leaves the state", "    }", ""]
    return lines


def limits_lines(doc: PlanDocument) -> list[str]:
    """What the plan changes against ``limits`` of reconciler.yaml (when it sets any)."""
    section = doc.get("limits")
    if not section:
        return []
    most = [f"{name} {n}" for name, n in (
        ("maxImageSetsChanged", section["max_image_sets_changed"]),
        ("maxStudiesChanged", section["max_studies_changed"])) if n is not None]
    line = (f"Limits: {_plural(section['image_sets_changed'], 'image set', 'image sets')} and "
            f"{_plural(section['studies_changed'], 'study', 'studies')} changed"
            + (f" ({', '.join(most)})" if most else ""))
    if section["protected_changed"]:
        line += f"; protected attributes changed: {', '.join(section['protected_changed'])}"
    if section["allowed"]:
        line += f"; lifted for this run: {', '.join(section['allowed'])}"
    return [line + "."] + [f"Limit exceeded: {text}." for text in section["exceeded"]]


def _change_lines(changes: list[PlanChange], color: bool) -> list[str]:
    lines = []
    current = None
    for change in changes:
        group = _group(change)
        if change["op"] in ("remove-series", "restore-series"):
            group = "Study"
        elif change["op"] in ("remove-instance", "restore-instance"):
            group = f"Series {change['series']}"
        if group != current:
            lines.append(f"      {group}")
            current = group
        line = _change_line(change)
        lines.append(_style(f"      {line}", line[0], color))
    return lines


def render_plan(doc: PlanDocument, color: bool = False) -> str:
    return "\n".join(plan_lines(doc, color)) + "\n"


def plan_lines(doc: PlanDocument, color: bool = False) -> Iterator[str]:
    """The text of the plan line by line (``plan`` writes them as they come: at 100,000 image
    sets the whole text is ~100 MB)."""
    # (One at a time: the entries may be packed, and a plan of 100,000 changes would hold
    # them all as dicts here.)
    changed = (e for e in doc["image_sets"] if e["action"] != plans.ACTION_NOOP)
    if plans.has_changes(doc):
        yield from ["reconciler will perform the following actions:", ""]
    elif not doc["summary"]["error"]:
        yield from ["No changes. The live metadata matches the specs.", ""]
    for move in doc.get("moved", []):
        yield from moved_lines(move)
    for entry in changed:
        yield from render_entry(entry, color)
    for group in doc.get("groups", []):
        yield from render_group(group, color)
    for entry in doc.get("removed", []):
        yield from render_removed(entry, color)
    yield summary_line(doc)
    yield from limits_lines(doc)
    if doc.get("not_reread"):
        yield f"Note: {doc['not_reread']['note']}."
    errors = doc["summary"]["error"]
    if errors:
        yield f"Error: {_plural(errors, 'image set', 'image sets')} could not be planned."
    if doc.get("redacted"):
        yield "Values of PS3.15 Basic Profile attributes are redacted (--no-redact shows them)."


def render_json(doc: dict[str, Any]) -> str:
    return "".join(json_chunks(doc))


def json_chunks(doc: dict[str, Any]) -> Iterator[str]:
    """``render_json``'s text in pieces of about 64 KB, never whole in memory."""
    yield from document_chunks(plans.public_view(doc))


def document_chunks(doc: dict[str, Any]) -> Iterator[str]:
    """``json.dumps(doc, indent=2, ensure_ascii=False)`` and a newline, in pieces of about
    64 KB (a report of 100,000 image sets is ~50 MB of JSON)."""
    yield from batched(json_pieces(doc, indent=2, ensure_ascii=False))
    yield "\n"


# -- apply / rollback reports ------------------------------------------------------------------
REPORT_ORDER = ("applied", "unchanged", "moved", "forgotten", "reverted", "stale", "failed",
                "skipped", "missing")


def render_report(doc: Report) -> str:
    """One line per image set (status, spec, id, versions, reason), then the counts."""
    return "\n".join(report_lines(doc)) + "\n"


def report_lines(doc: Report) -> Iterator[str]:
    """:func:`render_report`'s lines, as they are made (a report of 100,000 image sets is
    ~10 MB of text)."""
    for item in doc["image_sets"]:
        versions = ""
        if item["version_after"] and item["version_after"] != item["version_before"]:
            versions = f" version {item['version_before']} -> {item['version_after']}"
        elif item["version_after"]:
            versions = f" version {item['version_after']}"
        reason = f": {item['reason']}" if item["reason"] else ""
        yield (f"  {item['status']:<9} {item['spec']}: image set "
               f"{item['image_set_id']}{versions}{reason}")
    counts = doc["summary"]
    done = ", ".join(f"{counts[k]} {k}" for k in REPORT_ORDER if counts.get(k))
    verb = doc["operation"].capitalize()
    yield (f"{verb} complete: {done or 'nothing to do'}." if not (
        counts["failed"] or counts["stale"] or counts["missing"] or counts["skipped"])
        else f"{verb} finished with problems: {done}.")


# -- drift ---------------------------------------------------------------------------------------
def drift_summary_line(report: DriftReport) -> str:
    s = report["summary"]
    orphaned = f", {s['orphaned']} orphaned" if s.get("orphaned") else ""
    return (f"Drift: {s['drifted']} drifted, {s['missing']} missing{orphaned}, "
            f"{s['changed-elsewhere']} changed elsewhere, {s['in-sync']} in sync, "
            f"{s['not-applied']} not applied.")


def render_drift(doc: DriftReport) -> str:
    return "\n".join(drift_lines(doc)) + "\n"


def drift_lines(doc: DriftReport) -> Iterator[str]:
    """:func:`render_drift`'s lines, as they are made."""
    for item in doc["image_sets"]:
        where = f"image set {item['image_set_id']}" if item["image_set_id"] else "(no image set)"
        reason = f" ({item['reason']})" if item["reason"] else ""
        yield f"  {item['status']:<17} {item['spec']}: {where}{reason}"
        for attr in item["attributes"]:
            mark = "ignored" if attr["ignored"] else "drifted"
            yield f"      {mark}: {attr['path']} is now {format_value(attr['live'])}"
    yield drift_summary_line(doc)
    blind = (doc.get("check") or {}).get("index_lag")
    if blind:
        yield f"Note: {blind}."
    if doc.get("redacted"):
        yield "Values of PS3.15 Basic Profile attributes are redacted (--no-redact shows them)."
