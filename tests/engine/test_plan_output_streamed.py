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
