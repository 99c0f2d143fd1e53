"""The example GitHub Actions workflows are valid and say what the README promises.

Validity: each file against the GitHub workflow JSON Schema that check-jsonschema vendors
(schemastore's ``github-workflow.json``), read as YAML 1.2 as GitHub reads it. Their reconciler
commands are *run* in test_pull_request_flow.py; here, what each workflow must hold: OIDC
credentials (no keys), redaction on, S3 state, one plan comment, the artifact hand-over.
"""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
import yaml
from gitops_support import EXAMPLE
from workflow_runner import WORKFLOWS, load, reconciler_commands, reconciler_steps

NAMES = sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def _schema() -> dict:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendored.joinpath("github-workflows.json").read_text("utf-8"))


def test_the_three_workflows_are_there():
    assert NAMES == ["reconciler-apply.yml", "reconciler-drift.yml", "reconciler-plan.yml"]


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_valid_against_the_github_schema(name):
    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(load(name))]
    assert not problems, problems


def test_the_schema_does_catch_a_broken_workflow():
    schema = _schema()
    broken = load("reconciler-plan.yml")
    del broken["jobs"]["plan"]["runs-on"]
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


@pytest.mark.parametrize("name", NAMES)
def test_workflow_uses_oidc_redaction_and_pinned_actions(name):
    workflow = load(name)
    text = (WORKFLOWS / name).read_text()
    assert workflow["permissions"]["id-token"] == "write"          # OIDC role, no keys
    assert "AWS_ACCESS_KEY_ID" not in text and "secrets." not in text
    assert workflow["env"]["CI"] == "true"                          # redaction on
    for job in workflow["jobs"].values():
        creds = [s for s in job["steps"] if s.get("uses", "").startswith(
            "aws-actions/configure-aws-credentials@")]
        assert len(creds) == 1 and "role-to-assume" in creds[0]["with"]
        for step in job["steps"]:
            if "uses" in step:
                assert "@v" in step["uses"], step["uses"]           # a released major
        for step in job["steps"]:                                   # no expression injection
            assert "${{" not in step.get("run", ""), step["name"]
    assert reconciler_steps(workflow)


def test_plan_posts_one_comment_labels_and_keeps_the_plan():
    workflow = load("reconciler-plan.yml")
    # A guardrail label (reconciler:allow-large, reconciler:allow-protected:KEYWORD) plans
    # again: labeled and unlabeled are triggers too.
    assert workflow["on"] == {"pull_request": {"branches": ["main"], "types": [
        "opened", "synchronize", "reopened", "labeled", "unlabeled"]}}
    steps = {s["name"]: s for s in workflow["jobs"]["plan"]["steps"] if "name" in s}
    commands = reconciler_commands(steps["Plan"]["run"])
    assert commands[0].startswith("reconciler plan --out plan.json --detailed-exitcode "
                                  "--format markdown")
    assert steps["Plan"]["env"]["LABELS"] == \
        "${{ join(github.event.pull_request.labels.*.name, ' ') }}"
    assert "reconciler:allow-large) allow+=(--allow-large)" in steps["Plan"]["run"]
    upload = steps["Keep the reviewed plan for apply"]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "plan.json" and upload["with"]["name"] == "reconciler-plan"
    script = steps["Post the plan (one comment, updated) and label the pull request"]["with"]["script"]
    assert "updateComment" in script and "<!-- reconciler-plan -->" in script
    for label in ("reconciler:no-changes", "reconciler:changes", "reconciler:plan-failed"):
        assert label in script


def test_apply_applies_the_reviewed_artifact_on_merge_only():
    workflow = load("reconciler-apply.yml")
    assert workflow["on"]["pull_request"]["types"] == ["closed"]
    job = workflow["jobs"]["apply"]
    assert "github.event.pull_request.merged == true" in job["if"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    assert steps["actions/download-artifact@v4"]["with"]["name"] == "reconciler-plan"
    commands = reconciler_commands(steps["Apply the reviewed plan"]["run"])
    assert any(c.startswith("reconciler apply plan.json") for c in commands)
    assert "Stale plan" in steps["Apply the reviewed plan"]["run"]


def test_drift_is_scheduled_and_fails_on_drift():
    workflow = load("reconciler-drift.yml")
    assert workflow["on"]["schedule"][0]["cron"] and "workflow_dispatch" in workflow["on"]
    steps = {s.get("name"): s for s in workflow["jobs"]["drift"]["steps"]}
    assert reconciler_commands(steps["Drift"]["run"]) == [
        "reconciler drift --format markdown > drift.md"]
    assert steps["Fail on drift or error"]["if"] == "steps.drift.outputs.exitcode != '0'"


def test_example_config_keeps_the_state_in_s3_with_redaction_and_a_kms_key():
    config = yaml.safe_load((EXAMPLE / "reconciler.yaml").read_text())
    assert config["state"]["backend"] == "s3" and config["redact"] == "auto"
    assert config["specs"] == ["specs"]
    assert config["keys"] == {"source": "kms", "kmsKeyId": "alias/radiology-reconciler",
                              "region": "us-east-1"}
    readme = (EXAMPLE / "README.md").read_text()
    for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:EncryptionContext:reconciler:purpose"):
        assert action in readme


def test_the_local_walkthrough_of_the_example_readme(emu, tmp_path, monkeypatch):
    """README.md "Try it locally first", with reconciler.local.yaml, against the emulator."""
    import re
    import shutil

    from click.testing import CliRunner

    from reconciler.cli import cli

    shutil.copytree(EXAMPLE, tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", emu.url)
    readme = (EXAMPLE / "README.md").read_text()
    alias = re.search(r"alias rc='(reconciler [^']+)'", readme).group(1).split()[1:]
    block = readme.split("alias rc=", 1)[1].split("```", 1)[0].splitlines()[1:]
    expected = {"apply": 0, "drift": 0, "plan": 0, "validate": 0, "fmt": 0}
    ran = []
    for line in block:
        for command in line.split("#")[0].split("&&"):
            args = command.split()
            if not args:
                continue
            assert args[0] == "rc", line
            result = CliRunner().invoke(cli, [*alias, *args[1:]], catch_exceptions=False)
            assert result.exit_code == expected[args[1]], (command, result.output)
            ran.append(args[1])
    assert ran == ["validate", "fmt", "plan", "apply", "drift"]
    assert (tmp_path / "repo" / ".reconciler" / "state.json").exists()
