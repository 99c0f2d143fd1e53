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


def _removed(spec: str, action: str, **extra) -> dict:
    entry = {"spec": spec, "spec_digest": None, "datastore_id": "d" * 32,
             "image_set_id": "b" * 32, "action": action, "reason": f"spec {spec} is gone",
             "state_serial": 3, "version_id": None, "target_version": None, "study": None,
             "changes": [], "other_changes": [], "note": None, "error": None}
    entry.update(extra)
    return entry


def test_removals_moves_and_their_errors_render_in_every_format():
    from reconciler.documents.events import plan_events
    from reconciler.documents.render import render_plan

    change = {"op": "restore-instance", "level": "Instance", "key": "", "vr": None,
              "series": "1.2", "instance": "1.2.3", "private": False, "before": None,
              "after": None}
    other = [f"Series[1.2].Instances[1.2.{i}]" for i in range(12)]
    doc = plans.new_plan([], redacted=True, removed=[
        _removed("gone|one", "forget"),
        _removed("back", "revert", version_id="4", target_version="1", study="study-" + "0" * 12,
                 changes=[change], other_changes=other, note="RAD-77 <wrong>"),
        _removed("stuck", "error", error="image set is DELETED: nothing to revert")],
        moved=[{"from": "old", "to": "new", "image_sets": [
            {"datastore_id": "d" * 32, "image_set_id": "c" * 32, "state_serial": 2}]}])
    assert plans.validate(doc) and plans.has_changes(doc)
    assert doc["summary"] == {"update": 0, "unchanged": 0, "error": 1, "attributes_changed": 0,
                              "requests": 0, "forget": 1, "revert": 1, "move": 1}
    text = render_plan(doc)
    assert "  - forget image set " + "b" * 32 in text
    assert "  - revert image set " + "b" * 32 + " to version 1 {" in text
    assert "      + Instance 1.2.3 (the whole instance, restored)" in text
    assert "it also changes 12 items no spec of this one manages: " in text
    assert "and 2 more" in text
    assert "  # stuck: image set " + "b" * 32 + ": error: image set is DELETED" in text
    assert "  # old has moved to new (1 image set)" in text
    assert "; 1 image set to revert, 1 to forget, 1 record to move." in text
    markdown = render_plan_markdown(doc)
    assert "| gone\\|one | `" + "b" * 32 + "` | forget | — |" in markdown
    assert "| back | `" + "b" * 32 + "` | revert to version 1 | 1 |" in markdown
    assert "| old → new | 1 image set | moved | — |" in markdown
    assert "RAD-77 &lt;wrong&gt;" not in markdown and "RAD-77 <wrong>" in markdown   # in code
    assert markdown.count("<details>") == 4 == markdown.count("</details>")
    events = list(plan_events(doc))
    assert [(e["action"], e["spec"]) for e in events if e["type"] == "planned_change"] == [
        ("move", "new"), ("forget", "gone|one"), ("revert", "back"), ("error", "stuck")]
    assert events[-1]["forget"] == 1 and events[-1]["move"] == 1


def test_orphaned_records_are_drift():
    from reconciler.documents.events import drift_events
    from reconciler.documents.render import render_drift

    report = {"format_version": "1", "reconciler_version": "x", "checked_at": "t",
              "redacted": False,
              "summary": {"in-sync": 0, "drifted": 0, "changed-elsewhere": 0, "missing": 0,
                          "not-applied": 0, "orphaned": 1},
              "image_sets": [{"spec": "gone", "datastore_id": "d", "image_set_id": "i",
                              "status": "orphaned", "recorded_version": "2",
                              "live_version": None, "attributes": [],
                              "reason": "spec gone is no longer in the specs"}]}
    text = render_drift_markdown(report)
    assert text.startswith("### reconciler drift\n\n:warning: **Drift found.** Drift: 0 "
                           "drifted, 0 missing, 1 orphaned,")
    assert "| orphaned | gone |" in text and "# spec gone is no longer in the specs" in text
    assert "orphaned          gone: image set i" in render_drift(report)
    assert [e["status"] for e in drift_events(report) if e["type"] == "drift_detected"] == [
        "orphaned"]
