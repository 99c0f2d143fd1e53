"""`plan` writes the text and the JSON of a large plan piece by piece; what it writes is exactly
render_plan / the JSON of the plan, across the pieces' boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli.base import GlobalOptions
from reconciler.cli.output import write_plan
from reconciler.documents import plans
from reconciler.documents.render import render_plan

GOLDEN = Path(__file__).parents[1] / "golden" / "plan" / "update-each-level" / "expected.json"


def large_plan(copies: int) -> dict:
    doc = json.loads(GOLDEN.read_text())
    entries = [e for e in doc["image_sets"] if e["action"] != plans.ACTION_NOOP]
    doc["image_sets"] = [dict(e, spec=f"{e['spec']}-{i}") for i in range(copies)
                         for e in entries]
    return doc


@pytest.mark.parametrize("copies", [1, 97, 400])
def test_the_text_written_is_render_plan(capsys, copies):
    doc = large_plan(copies)
    write_plan(doc, "text", GlobalOptions(color=False))
    out = capsys.readouterr().out
    assert out == render_plan(doc)
    assert copies < 100 or out.count("\n") > 3000       # several batches of 1,000 lines


def test_the_json_written_is_the_plan(capsys):
    doc = large_plan(400)
    write_plan(doc, "json", GlobalOptions(color=False))
    out = capsys.readouterr().out
    assert len(out) > 3 * (1 << 16) and out.endswith("}\n")
    assert json.loads(out) == doc
    assert out == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def test_a_redacted_plan_is_printed_from_a_packed_copy_and_the_plan_is_untouched(capsys):
    # plan --json with redaction on prints the public view: payloads replaced by their size.
    # It is made an entry at a time and kept packed (a deep copy of a 100,000-entry plan
    # held every entry as a dict), and changes nothing of the plan that is saved.
    from reconciler.core.packed import PackedList

    doc = dict(large_plan(97), redacted=True)
    packed = dict(doc, image_sets=PackedList.of(doc["image_sets"], canonical=False))
    view = plans.public_view(packed)
    assert isinstance(view["image_sets"], PackedList)
    assert [k for k in view if k != "checksum"] == list(doc)
    assert list(view["image_sets"]) == list(plans.public_view(doc)["image_sets"])
    requests = [r for e in view["image_sets"] for r in e["requests"]]
    assert requests and all(isinstance(r["updatableAttributes"], dict)
                            for r in requests if "updatableAttributes" in r)
    assert not plans.is_applicable(view) and plans.is_applicable(packed)
    assert list(packed["image_sets"]) == doc["image_sets"]
    write_plan(packed, "json", GlobalOptions(color=False))
    printed = json.loads(capsys.readouterr().out)
    assert printed["image_sets"] == list(view["image_sets"]) and printed["groups"] == []
