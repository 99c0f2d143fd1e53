"""The GitOps workflow as a team lives it, scripted: a temporary git repository holding
examples/gitops, pull requests on branches, and the `run:` steps of the example GitHub Actions
workflows executed as a runner would, with the emulator standing in for HealthImaging and moto
for the S3 state bucket. Outputs and exit codes are asserted at each step.

Redaction is on (``CI: "true"`` is in every workflow's env, as on GitHub): no PHI value of the
sample data may reach a comment, a job summary or an issue.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

from gitops_support import CT_SPEC, CT_STUDY, git
from matrix import readings
from workflow_runner import load, reconciler_steps

PLAN, APPLY, DRIFT = "reconciler-plan.yml", "reconciler-apply.yml", "reconciler-drift.yml"
# Values of the sample data and of the specs that only ever appear redacted in CI.
PHI = ("CompressedSamples", "DOE^JANE", "CT CHEST", "ACC-0042", "ANON^0001", "EDITED AT")


def _assert_no_phi(text: str) -> None:
    leaked = [value for value in PHI if value in text]
    assert not leaked, f"PHI in CI output: {leaked}"


def _download_artifact(repo, saved) -> None:
    """What actions/upload-artifact + download-artifact do: the plan file travels, nothing else."""
    for name in ("plan.json", "plan.md", "plan.err"):
        (repo.root / name).unlink(missing_ok=True)
    shutil.copy2(saved, repo.root / "plan.json")


def test_pull_request_plan_merge_apply_then_scheduled_drift(metadata_repo, tmp_path,
                                                             index_caught_up):
    repo = metadata_repo
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()

    # A pull request changes a study description.
    repo.branch("ct-contrast")
    repo.edit(CT_SPEC, "StudyDescription: CT CHEST", "StudyDescription: CT CHEST W CONTRAST",
              "CT study: with contrast (RAD-1042)")
    steps = repo.runner.run(PLAN)
    check = steps["Check the specs (offline)"]
    assert check.exit_code == 0, check.stderr
    assert "3 specs valid." in check.stdout
    plan = steps["Plan"]
    assert plan.exit_code == 0, plan.stderr
    assert plan.outputs["exitcode"] == "2"          # changes: label reconciler:changes
    markdown = (repo.root / "plan.md").read_text()
    # (primary seeds: one study update each; non-primary ones: plain per-image-set requests)
    assert markdown.startswith("### reconciler plan\n\n**Plan: 3 image sets to update" + (
        " in 3 requests (3 study updates)" if readings.current().behaviour("seed_primary")
        == "true" else "") + ", 0 unchanged")
    assert markdown.count("<details>") == 3 and "<redacted " in markdown
    assert "StudyDescription" in markdown
    assert plan.summary == markdown                   # the job summary shows the same
    _assert_no_phi(markdown + plan.stdout + plan.stderr)
    plan_file = repo.root / "plan.json"
    assert stat.S_IMODE(os.stat(plan_file).st_mode) == 0o600
    shutil.copy2(plan_file, artifacts / "plan.json")  # upload-artifact
    # The artifact is sealed with the KMS key: no value in it, its payloads included.
    artifact = (artifacts / "plan.json").read_text()
    _assert_no_phi(artifact)
    assert "CT CHEST W CONTRAST" not in artifact
    assert json.loads(artifact)["data_key"]["source"] == "kms"

    # Merged: apply exactly the reviewed plan.
    repo.merge("ct-contrast")
    _download_artifact(repo, artifacts / "plan.json")
    steps = repo.runner.run(APPLY)
    applied = steps["Apply the reviewed plan"]
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    assert "Apply complete: 3 applied." in applied.stdout
    assert applied.summary.startswith("### reconciler plan\n\n**Plan: 3 image sets to update")
    assert "Apply complete: 3 applied." in applied.summary
    _assert_no_phi(applied.stdout + applied.stderr + applied.summary)

    # The next pull request only touches labels: nothing to change.
    repo.branch("labels")
    repo.edit(CT_SPEC, "ticket: RAD-1042", "ticket: RAD-1043", "ticket number")
    plan = repo.runner.run(PLAN, "Plan")["Plan"]
    assert plan.exit_code == 0, plan.stderr
    assert plan.outputs["exitcode"] == "0"          # label reconciler:no-changes
    assert (repo.root / "plan.md").read_text().startswith(
        "### reconciler plan\n\n**No changes.** The live metadata matches the specs. "
        "Plan: 0 image sets to update, 3 unchanged, 0 attributes changed.")

    # Scheduled drift on main: quiet, then someone edits the study at the console. (A
    # schedule runs long after the edits: a lagging search index has caught up by then.)
    repo.merge("labels")
    index_caught_up()
    drift = repo.runner.run(DRIFT)["Drift"]
    assert drift.exit_code == 0 and drift.outputs["exitcode"] == "0", drift.stderr
    assert "**No drift.** Drift: 0 drifted, 0 missing, 0 changed elsewhere, 3 in sync" in drift.stdout
    repo.write_oob(repo.image_set_of(CT_STUDY), {"StudyDescription": "EDITED AT THE CONSOLE"})
    index_caught_up()
    drift = repo.runner.run(DRIFT)["Drift"]
    assert drift.exit_code == 0, drift.stderr         # the step records; a later step fails the job
    assert drift.outputs["exitcode"] == "2"          # → issue reconciler:drift, job fails
    report = (repo.root / "drift.md").read_text()
    assert report.startswith("### reconciler drift\n\n:warning: **Drift found.** Drift: 1 drifted")
    assert "| drifted | ct-small |" in report and "Study.StudyDescription is now <redacted" in report
    assert drift.summary == report
    _assert_no_phi(report + drift.stderr)

    # Every step of the example workflows that runs reconciler was run above.
    for workflow in (PLAN, APPLY, DRIFT):
        for _, step in reconciler_steps(load(workflow)):
            assert (workflow, step["name"]) in repo.runner.ran, (workflow, step["name"])


def test_a_stale_plan_fails_the_apply_job_with_a_clear_message(metadata_repo, tmp_path):
    """Two pull requests planned against the same data; the later one merges and is applied
    first. The earlier plan no longer holds: its apply job fails with a clear message and
    writes nothing unreviewed. (pr-b's plan and apply run in process, to keep this fast: they
    only set the scene; pr-a's go through the workflow steps.)"""
    repo = metadata_repo
    repo.branch("pr-a")
    repo.edit(CT_SPEC, "StudyDescription: CT CHEST", "StudyDescription: CT CHEST A", "pr-a")
    plan = repo.runner.run(PLAN, "Plan")["Plan"]
    assert plan.outputs["exitcode"] == "2", plan.stderr
    shutil.copy2(repo.root / "plan.json", tmp_path / "pr-a.json")

    git(repo.root, "checkout", "-q", "main")
    repo.branch("pr-b")
    repo.edit(CT_SPEC, "PatientName: DOE^JANE", "PatientName: DOE^JANE^M", "pr-b")
    repo.merge("pr-b")
    assert repo.cli("plan", "--out", "pr-b.json").exit_code == 0
    assert repo.cli("apply", "pr-b.json").exit_code == 0

    repo.merge("pr-a")
    _download_artifact(repo, tmp_path / "pr-a.json")
    stale = repo.runner.run(APPLY)["Apply the reviewed plan"]
    assert stale.exit_code == 1
    assert "::error title=Stale plan::" in stale.stdout
    assert "stale     ct-small: image set" in stale.stdout
    assert "spec ct-small changed since the plan was made" in stale.stdout
    # Nothing of pr-a's plan was written: the seed version, and pr-b's apply.
    versions = repo.client.list_image_set_versions(datastoreId=repo.emu.datastore_id,
                                                   imageSetId=repo.image_set_of(CT_STUDY))
    assert len(versions["imageSetPropertiesList"]) == 2
