"""Golden Markdown and NDJSON outputs (``--format markdown``, ``--json-stream``) of plan, show,
apply and drift, for the example repository's specs against the emulator.

The CLI runs in process (click's CliRunner) with a local state; ``CI`` is unset and redaction
chosen by flag, so both forms are pinned. Timestamps and salted hashes are normalised (ids and
versions are deterministic in the emulator). Set UPDATE_GOLDEN=1 to rewrite the expected files
after an intended change, and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from gitops_support import CT_STUDY, EXAMPLE, OutOfBand

from reconciler.cli import cli

GOLDEN = Path(__file__).parent / "golden"
HASH = re.compile(r"sha256:[0-9a-f]{6}>")
TIMESTAMP = re.compile(r'"@timestamp":"[^"]+"')
EVENT_TYPES = {"planned_change", "apply_start", "apply_progress", "apply_complete",
               "apply_errored", "change_summary", "drift_detected"}


@pytest.fixture
def project(tmp_path, emu, monkeypatch):
    root = tmp_path / "project"
    shutil.copytree(EXAMPLE / "specs", root / "specs")
    (root / "reconciler.yaml").write_text(
        f"datastoreId: {emu.datastore_id}\nspecs: [specs]\n"
        "quotas: {UpdateImageSetMetadata: 100}\n")
    monkeypatch.chdir(root)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", emu.url)
    return root


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--no-color", *args], catch_exceptions=False)
    return result.exit_code, result.stdout


def normalise(text: str) -> str:
    return TIMESTAMP.sub('"@timestamp":"T"', HASH.sub("sha256:HASH>", text))


def check_stream(text: str) -> list[dict]:
    events = [json.loads(line) for line in text.splitlines()]
    for event in events:
        assert event["type"] in EVENT_TYPES, event
        assert isinstance(event["@message"], str) and event["@timestamp"].endswith("+00:00")
    return events


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    got = normalise(text)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text(), f"{name} differs (UPDATE_GOLDEN=1 rewrites it)"


def test_markdown_and_event_stream_through_plan_apply_drift(project, emu):
    code, text = run("plan", "--format", "markdown")
    assert code == 0
    golden("plan.md", text)
    code, redacted = run("plan", "--format", "markdown", "--redact", "--detailed-exitcode")
    assert code == 2
    golden("plan-redacted.md", redacted)
    assert "DOE^JANE" not in redacted and "CompressedSamples" not in redacted

    code, stream = run("plan", "--json-stream", "--redact", "--out", "plan.json")
    assert code == 0
    events = check_stream(stream)
    assert [e["type"] for e in events] == ["planned_change"] * 3 + ["change_summary"]
    assert "updatableAttributes" not in stream        # payloads never leave the plan file
    golden("plan.ndjson", stream)
    # show renders the saved document as plan rendered the live one.
    code, shown = run("show", "plan.json", "--format", "markdown")
    assert code == 0 and normalise(shown) == normalise(redacted)   # no state yet: salts differ

    # One image set at a time: events are emitted as image sets finish, so only then is
    # their order the plan's.
    code, stream = run("apply", "plan.json", "--json-stream", "--max-in-flight", "1")
    assert code == 0
    events = check_stream(stream)
    assert [e["type"] for e in events] == (["apply_start"] * 3
                                           + ["apply_progress", "apply_complete"] * 3
                                           + ["change_summary"])
    golden("apply.ndjson", stream)

    code, text = run("drift", "--format", "markdown")
    assert code == 0 and text.startswith("### reconciler drift\n\n**No drift.**")

    writer = OutOfBand(emu)
    writer.write_oob(writer.image_set_of(CT_STUDY), {"StudyDescription": "EDITED",
                                                     "AccessionNumber": "ACC-9"})
    code, text = run("drift", "--format", "markdown")
    assert code == 2
    golden("drift.md", text)
    code, text = run("drift", "--format", "markdown", "--redact")
    assert code == 2 and "EDITED" not in text
    golden("drift-redacted.md", text)
    code, stream = run("drift", "--json-stream")
    assert code == 2
    events = check_stream(stream)
    assert [e["type"] for e in events] == ["drift_detected", "change_summary"]
    golden("drift.ndjson", stream)


def test_apply_errored_event(project, emu):
    """A failed image set is an apply_errored event (here: the image set vanished)."""
    code, _ = run("plan", "--out", "plan.json")
    assert code == 0
    repo = OutOfBand(emu)
    repo.client.delete_image_set(datastoreId=emu.datastore_id,
                                 imageSetId=repo.image_set_of(CT_STUDY))
    code, stream = run("apply", "plan.json", "--json-stream")
    assert code == 1
    events = check_stream(stream)
    errored = [e for e in events if e["type"] == "apply_errored"]
    assert [e["spec"] for e in errored] == ["ct-small"]
    assert errored[0]["status"] == "missing" and errored[0]["reason"]
    assert events[-1]["type"] == "change_summary" and events[-1]["missing"] == 1


def test_output_options_are_exclusive(project):
    code, _ = run("plan", "--json", "--format", "markdown")
    assert code == 1
    code, _ = run("apply", "--json-stream")          # would need to ask: refused
    assert code == 1
