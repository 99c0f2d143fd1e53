"""The JSON reports of apply, rollback and drift follow their schemas (the files in schemas/),
through the CLI against the emulator."""

import json
from importlib import resources

import jsonschema
import pytest
from click.testing import CliRunner

from reconciler.cli import cli


def _schema(name):
    return json.loads(resources.files("reconciler.schemas").joinpath(name).read_text())


@pytest.fixture
def project(example_project):
    return example_project


def _run(emulator, project, *args, ci=None):
    return CliRunner().invoke(cli, ["--config", str(project / "reconciler.yaml"), *args],
                              env={"AWS_ENDPOINT_URL_MEDICAL_IMAGING": emulator.url, "CI": ci})


def test_apply_rollback_and_drift_reports_follow_their_schemas(emulator, project):
    applied = _run(emulator, project, "apply", "--auto-approve", "--json")
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.stdout)
    jsonschema.Draft202012Validator(_schema("report.v1.schema.json")).validate(report)
    assert report["summary"]["applied"] == 3
    assert {i["response"]["imageSetWorkflowStatus"] for i in report["image_sets"]} == {"UPDATED"}

    drift = _run(emulator, project, "drift", "--json")
    assert drift.exit_code == 0, drift.output
    jsonschema.Draft202012Validator(_schema("drift.v1.schema.json")).validate(json.loads(drift.stdout))

    rolled = _run(emulator, project, "rollback", "ct-small", "--auto-approve", "--json")
    assert rolled.exit_code == 0, rolled.output
    jsonschema.Draft202012Validator(_schema("report.v1.schema.json")).validate(
        json.loads(rolled.stdout))

    # the state file follows its schema too, and holds no value of the specs
    state = (project / ".reconciler" / "state.json").read_text()
    jsonschema.Draft202012Validator(_schema("state.v1.schema.json")).validate(json.loads(state))
    for value in ("DOE^JANE", "19700101", "ACC-0042", "ANON0001", "CT CHEST", "reviewed"):
        assert value not in state


def test_schemas_are_valid_json_schemas():
    for name in ("plan.v1.schema.json", "drift.v1.schema.json", "report.v1.schema.json",
                 "state.v1.schema.json", "spec.v1.schema.json", "config.v1.schema.json"):
        jsonschema.Draft202012Validator.check_schema(_schema(name))
