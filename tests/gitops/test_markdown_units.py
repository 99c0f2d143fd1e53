"""The Markdown renderers on hand-made documents: values that would break Markdown (pipes,
backticks, HTML) stay inside their cell, code span or block, and error entries render."""

from __future__ import annotations

from reconciler.documents import plans
from reconciler.documents.markdown import render_drift_markdown, render_plan_markdown


def _entry(spec: str, action: str, changes=(), error=None) -> dict:
    return {"spec": spec, "spec_digest": "0" * 64, "datastore_id": "d" * 32,
            "image_set_id": "a" * 32 if action != "error" else None, "version_id": "1",
            "action": action, "force": False, "include_study_image_sets": False,
            "state_serial": None, "before_digest": None,
            "requests": [{"updatableAttributes": "{}", "removableAttributes": None,
                          "force": False, "includeStudyImageSets": False}]
            if action == "update" else [],
            "changes": list(changes), "error": error}


def test_values_that_look_like_markdown_stay_in_the_code_block():
    change = {"op": "update", "level": "Study", "key": "StudyDescription", "vr": "LO",
              "series": None, "instance": None, "private": False,
              "before": "a | b", "after": "```</details><script>x</script>"}
    doc = plans.new_plan([_entry("weird|name", "update", [change]),
                          _entry("broken", "error", error="selector matched <nothing>")],
                         redacted=False)
    text = render_plan_markdown(doc)
    assert text.startswith("### reconciler plan\n\n:x: **Plan: 1 image set to update")
    assert "| weird\\|name |" in text                       # the table row holds
    assert "<code>weird|name</code>" in text
    assert "<code>broken</code>: error" in text and "selector matched <nothing>" in text
    # the value's backticks are inside a longer fence, so the block cannot be closed by it
    assert "````diff" in text and text.count("````\n") >= 1
    assert text.count("<details>") == 2 == text.count("</details>\n")
    assert "1 image set could not be planned" in text


def test_drift_report_without_drift():
    report = {"format_version": "1", "reconciler_version": "x", "checked_at": "t",
              "redacted": True,
              "summary": {"in-sync": 1, "drifted": 0, "changed-elsewhere": 1, "missing": 0,
                          "not-applied": 0},
              "image_sets": [
                  {"spec": "a", "datastore_id": "d", "image_set_id": "i", "status": "in-sync",
                   "recorded_version": "2", "live_version": "2", "attributes": [], "reason": None},
                  {"spec": "b", "datastore_id": "d", "image_set_id": "j",
                   "status": "changed-elsewhere", "recorded_version": "2", "live_version": "3",
                   "attributes": [{"path": "Study.StudyDescription", "live": "<redacted LO len=3 "
                                   "sha256:abcdef>", "ignored": True}],
                   "reason": "1 drifted attribute(s) ignored by reconciler.yaml"}]}
    text = render_drift_markdown(report)
    assert text.startswith("### reconciler drift\n\n**No drift.** Drift: 0 drifted")
    assert "| changed-elsewhere | b |" in text and "| in-sync |" not in text
    assert "# ignored: Study.StudyDescription is now <redacted LO len=3 sha256:abcdef>" in text
    assert text.rstrip().endswith("(`--no-redact` shows them)._")
