"""Markdown renderers of the plan document and of the drift report, for pull-request comments,
job summaries and issues (``--format markdown``).

Like :mod:`reconciler.documents.render`, they read only the serialised documents, so ``plan`` and
``show PLANFILE`` render the same Markdown. The summary comes first (a reviewer sees at once
whether anything changes), then a table of the image sets concerned (a study update is one
row), then one collapsible ``<details>`` block per image set or group holding the very lines
the text renderer prints, in a ``diff`` code block with the change symbols in the first
column so that GitHub colours them (``+`` add, ``-`` remove, ``!`` update: ``~`` is not a diff symbol). Values are printed as the
documents hold them: when redaction is on they are already redacted markers, and nothing here
ever reads a payload.
"""

from __future__ import annotations

import re
from typing import Any

from . import plans
from .render import (
    drift_summary_line, format_value, group_title, limits_lines, moved_lines, render_entry,
    render_group, render_removed, summary_line)
from .types import DriftReport, PlanDocument

REDACTION_NOTE = ("_Values of PS3.15 Basic Profile attributes are redacted "
                  "(`--no-redact` shows them)._")


def _cell(text: Any) -> str:
    """A table cell: pipes and line breaks would break the row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: Any) -> str:
    """Inline code that survives backticks in the text (CommonMark: a longer fence)."""
    text = str(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _html(text: Any) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _block(lines: list[str], info: str = "diff") -> list[str]:
    """A fenced code block whose fence is longer than any backtick run inside it."""
    body = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`{3,}", body)), default=2)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", *lines, fence]


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


_SIGN = re.compile(r"^(\s*)([-+~])(?=\s)")


def _diff_lines(lines: list[str]) -> list[str]:
    """The text renderer's lines with each change symbol moved to the first column, where a
    ``diff`` code block colours it (``~`` becomes ``!``, which GitHub shows as a change)."""
    out = []
    for line in lines:
        line = line[2:] if line.startswith("  ") else line
        line = _SIGN.sub(lambda m: ("!" if m.group(2) == "~" else m.group(2)) + m.group(1), line)
        out.append(line)
    return out


# -- plan ----------------------------------------------------------------------------------------
def _details(title: str, text_lines: list[str]) -> list[str]:
    """A collapsible block holding the text renderer's lines of one item as a diff."""
    body = _diff_lines([line for line in text_lines if line.strip()])
    return ["<details>", f"<summary>{title}</summary>", "", *_block(body), "", "</details>", ""]


def render_plan_markdown(doc: PlanDocument) -> str:
    s = doc["summary"]
    entries = doc["image_sets"]
    shown = [e for e in entries if e["action"] != plans.ACTION_NOOP]
    lines = ["### reconciler plan", ""]
    if s["error"]:
        headline = (f":x: **{summary_line(doc)}** "
                    f"{_plural(s['error'], 'image set', 'image sets')} could not be planned.")
    elif plans.has_changes(doc):
        headline = f"**{summary_line(doc)}**"
    else:
        headline = f"**No changes.** The live metadata matches the specs. {summary_line(doc)}"
    lines += [headline, ""]
    if doc.get("not_reread"):
        lines += [f"> {doc['not_reread']['note']}.", ""]
    limits = limits_lines(doc)
    if limits:
        lines += [("> :x: " if line.startswith("Limit exceeded") else "> ") + line
                  for line in limits] + [""]
    groups = doc.get("groups", [])
    removed, moved = doc.get("removed", []), doc.get("moved", [])
    if shown or groups or removed or moved:
        lines += ["| spec | image set | action | changes |", "| --- | --- | --- | ---: |"]
        for m in moved:
            lines.append(f"| {_cell(m['from'])} → {_cell(m['to'])} | "
                         f"{_plural(len(m['image_sets']), 'image set', 'image sets')} | "
                         f"moved | — |")
        for e in shown:
            count = len(e["changes"]) if e["action"] == plans.ACTION_UPDATE else "—"
            lines.append(f"| {_cell(e['spec'])} | {_code(e['image_set_id'] or '—')} | "
                         f"{e['action']} | {count} |")
        for g in groups:
            specs = ", ".join(dict.fromkeys(m["spec"] for m in g["members"]))
            lines.append(f"| {_cell(specs)} | {_cell(group_title(g))} | update "
                         f"({_plural(len(g['requests']), 'request', 'requests')}) | "
                         f"{len(g['changes'])} |")
        for e in removed:
            action = (f"revert to version {e['target_version']}" if e["action"] == "revert"
                      else e["action"])
            count = len(e["changes"]) if e["action"] == "revert" else "—"
            lines.append(f"| {_cell(e['spec'])} | {_code(e['image_set_id'])} | {action} | "
                         f"{count} |")
        lines.append("")
    for m in moved:
        lines += _details(f"<code>{_html(m['from'])}</code> → <code>{_html(m['to'])}</code>: "
                          f"moved", moved_lines(m))
    for e in shown:
        if e["action"] == plans.ACTION_ERROR:
            title = f"<code>{_html(e['spec'])}</code>: error"
        else:
            title = (f"<code>{_html(e['spec'])}</code>: image set "
                     f"<code>{_html(e['image_set_id'])}</code> — "
                     f"{_plural(len(e['changes']), 'change', 'changes')}")
        lines += _details(title, render_entry(e))
    for g in groups:
        title = (f"{_html(group_title(g))} — {_plural(len(g['changes']), 'change', 'changes')}, "
                 f"{_plural(len(g['requests']), 'request', 'requests')}")
        lines += _details(title, render_group(g))
    for e in removed:
        what = {"revert": f"revert — {_plural(len(e['changes']), 'change', 'changes')}",
                "forget": "forget", "error": "error"}[e["action"]]
        lines += _details(f"<code>{_html(e['spec'])}</code>: image set "
                          f"<code>{_html(e['image_set_id'])}</code> — {what}", render_removed(e))
    if doc.get("redacted"):
        lines += [REDACTION_NOTE, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# -- drift ---------------------------------------------------------------------------------------
DRIFT_ORDER = ("drifted", "missing", "orphaned", "changed-elsewhere", "not-applied", "in-sync")


def render_drift_markdown(report: DriftReport) -> str:
    s = report["summary"]
    drifted = bool(s["drifted"] or s["missing"] or s.get("orphaned"))
    mark = ":warning: **Drift found.**" if drifted else "**No drift.**"
    lines = ["### reconciler drift", "", f"{mark} {drift_summary_line(report)}", ""]
    blind = (report.get("check") or {}).get("index_lag")
    if blind:
        lines += [f"> {blind}.", ""]
    notable = sorted((i for i in report["image_sets"] if i["status"] != "in-sync"),
                     key=lambda i: (DRIFT_ORDER.index(i["status"]), i["spec"]))
    if notable:
        lines += ["| status | spec | image set | attributes |", "| --- | --- | --- | ---: |"]
        for item in notable:
            lines.append(f"| {item['status']} | {_cell(item['spec'])} | "
                         f"{_code(item['image_set_id']) if item['image_set_id'] else '—'} | "
                         f"{len(item['attributes'])} |")
        lines.append("")
    for item in notable:
        if not item["attributes"] and not item["reason"]:
            continue
        where = (f"image set <code>{_html(item['image_set_id'])}</code>"
                 if item["image_set_id"] else "no image set")
        body = []
        if item["recorded_version"] or item["live_version"]:
            body.append(f"# version recorded {item['recorded_version']}, "
                        f"live {item['live_version']}")
        if item["reason"]:
            body.append(f"# {item['reason']}")
        for attr in item["attributes"]:
            sign = "#" if attr["ignored"] else "!"
            word = "ignored" if attr["ignored"] else "drifted"
            body.append(f"{sign} {word}: {attr['path']} is now {format_value(attr['live'])}")
        lines += ["<details>",
                  f"<summary>{item['status']}: <code>{_html(item['spec'])}</code>, {where}</summary>",
                  "", *_block(body), "", "</details>", ""]
    if report.get("redacted"):
        lines += [REDACTION_NOTE, ""]
    return "\n".join(lines).rstrip("\n") + "\n"
