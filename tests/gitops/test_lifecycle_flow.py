"""The whole life of a managed study as a GitOps team lives it, each step a pull request run
through the example workflows (plan on the pull request, apply on merge, drift on schedule)
against the emulator and an S3 state in moto: a spec added, changed, renamed, then removed —
one forgotten, one reverted behind a guardrail a maintainer lifts with a label. The Markdown
comment shows each kind of change; redaction is on throughout.
"""

from __future__ import annotations

import json
import shutil

import boto3
from gitops_support import BUCKET, git
from test_pull_request_flow import APPLY, DRIFT, PLAN, _assert_no_phi

MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
SC_SPEC, NM_SPEC, CT_SPEC = ("specs/study-11c2ff998db3.yaml", "specs/study-2d3124a2a373.yaml",
                             "specs/study-2966c9f9fbae.yaml")
MR_SPEC = "specs/study-mr-brain.yaml"


def _pull_request(repo, branch: str, change, message: str, *labels: str):
    """A branch with one commit, planned by the plan workflow: (exit code, plan.md)."""
    git(repo.root, "checkout", "-q", "main")
    repo.branch(branch)
    change()
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-q", "--allow-empty", "-m", message)
    return _plan(repo, *labels)


def _plan(repo, *labels: str):
    repo.label(*labels)
    for name in ("plan.json", "plan.md", "plan.err"):     # each run is a fresh checkout
        (repo.root / name).unlink(missing_ok=True)
    steps = repo.runner.run(PLAN)
    assert steps["Check the specs (offline)"].exit_code == 0, steps["Check the specs (offline)"]
    plan = steps["Plan"]
    assert plan.exit_code == 0, plan.stderr
    markdown = (repo.root / "plan.md").read_text()
    assert plan.summary == markdown
    _assert_no_phi(markdown + plan.stdout + plan.stderr)
    return plan.outputs["exitcode"], markdown


def _merge_and_apply(repo, branch: str, tmp_path) -> str:
    """Merged: the apply workflow applies the plan artifact of the pull request."""
    shutil.copy2(repo.root / "plan.json", tmp_path / "plan.json")         # upload-artifact
    repo.merge(branch)
    for name in ("plan.json", "plan.md", "plan.err"):
        (repo.root / name).unlink(missing_ok=True)
    shutil.copy2(tmp_path / "plan.json", repo.root / "plan.json")         # download-artifact
    applied = repo.runner.run(APPLY)["Apply the reviewed plan"]
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    _assert_no_phi(applied.stdout + applied.summary)
    return applied.stdout


def _state(repo) -> dict:
    config = (repo.root / "reconciler.yaml").read_text()
    key = next(line.split(": ", 1)[1] for line in config.splitlines()
               if line.strip().startswith("key: "))
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=repo.env["AWS_ENDPOINT_URL_S3"])
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _edit(repo, path: str, old: str, new: str) -> None:
    file = repo.root / path
    text = file.read_text()
    assert text.count(old) == 1, (path, old)
    file.write_text(text.replace(old, new))


def test_add_change_rename_and_remove_specs_through_pull_requests(metadata_repo, tmp_path):
    repo = metadata_repo
    code, markdown = _pull_request(repo, "start", lambda: None, "nothing yet")
    assert code == "2"
    assert "Apply complete: 3 applied." in _merge_and_apply(repo, "start", tmp_path)

    # 1. Add: a spec for the MR study, in the layout fmt keeps.
    def add():
        (repo.root / MR_SPEC).write_text(
            "apiVersion: reconciler/v1\nkind: ImageSetMetadata\nmetadata:\n  name: mr-brain\n"
            f"target:\n  selector:\n    DICOMStudyInstanceUID: {MR_STUDY}\nattributes:\n"
            "  Study:\n    StudyDescription: MR BRAIN\n")
    code, markdown = _pull_request(repo, "add-mr", add, "MR study: description (RAD-2001)")
    assert code == "2"
    assert markdown.startswith("### reconciler plan\n\n**Plan: 1 image set to update")
    assert "| mr-brain |" in markdown and "StudyDescription" in markdown
    assert "Apply complete: 1 applied, 3 unchanged." in _merge_and_apply(repo, "add-mr", tmp_path)

    # 2. Change it.
    code, markdown = _pull_request(
        repo, "change-mr", lambda: _edit(repo, MR_SPEC, "MR BRAIN", "MR BRAIN W CONTRAST"),
        "MR study: with contrast (RAD-2002)")
    assert code == "2" and "| mr-brain |" in markdown and "1 attribute changed" in markdown
    _merge_and_apply(repo, "change-mr", tmp_path)
    version_before = _state(repo)["specs"]["ct-small"]["image_sets"][
        repo.image_set_of("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")]["version_before"]

    # 3. Rename a spec, with the moved entry that keeps its records.
    def rename():
        _edit(repo, CT_SPEC, "name: ct-small\n", "name: ct-chest\n")
        _edit(repo, "reconciler.yaml", "# moved:\n#   - {from: ct-small, to: ct-chest}\n",
              "moved:\n  - {from: ct-small, to: ct-chest}\n")
    code, markdown = _pull_request(repo, "rename-ct", rename, "ct-small is ct-chest now")
    assert code == "2"
    assert "; 1 record to move.**" in markdown and "0 attributes changed" in markdown
    assert "| ct-small → ct-chest | 1 image set | moved | — |" in markdown
    assert "ct-small has moved to ct-chest (1 image set)" in markdown
    assert "1 moved" in _merge_and_apply(repo, "rename-ct", tmp_path)
    specs = _state(repo)["specs"]
    assert "ct-small" not in specs
    assert list(specs["ct-chest"]["image_sets"].values())[0]["version_before"] == version_before

    # 4. The team protects PatientID: a change to reconciler.yaml alone plans nothing.
    code, markdown = _pull_request(
        repo, "protect", lambda: _edit(repo, "reconciler.yaml", "  # protectedAttributes: [",
                                       "  protectedAttributes: ["), "guard PatientID")
    assert code == "0" and "**No changes.**" in markdown
    repo.merge("protect")

    # 5. Remove two specs: the NM one is forgotten (the default), the de-identification is
    #    reverted, which changes PatientID back: the guardrail stops the plan...
    def remove():
        (repo.root / NM_SPEC).unlink()
        (repo.root / SC_SPEC).unlink()
        _edit(repo, "reconciler.yaml", "# removed:\n#   - spec: sc-deid\n#     action: revert\n"
              "#     reason: the research share ended (RES-12)\n",
              "removed:\n  - spec: sc-deid\n    action: revert\n"
              "    reason: the research share ended (RES-12)\n")
    code, markdown = _pull_request(repo, "retire", remove, "retire the NM and research specs")
    assert code == "1"
    assert "> :x: Limit exceeded: the plan changes PatientID, protected by " \
           "limits.protectedAttributes" in markdown
    assert ":x: **reconciler plan failed; nothing was saved:**" in markdown
    assert "> the plan changes PatientID" in markdown
    assert not (repo.root / "plan.json").exists()
    # ... until a maintainer labels the pull request (which plans again).
    code, markdown = _plan(repo, "reconciler:allow-protected:PatientID")
    assert code == "2"
    assert "1 image set to revert, 1 to forget.**" in markdown
    assert "| nm-bone |" in markdown and "| forget | — |" in markdown
    assert "| sc-deid |" in markdown and "| revert to version 1 |" in markdown
    assert "lifted for this run: PatientID" in markdown
    assert "the research share ended (RES-12)" in markdown
    assert "!     PatientID: <redacted LO len=8" in markdown       # the pseudonym goes back
    out = _merge_and_apply(repo, "retire", tmp_path)
    assert "1 forgotten, 1 reverted" in out
    assert set(_state(repo)["specs"]) == {"ct-chest", "mr-brain"}

    # The scheduled drift: everything managed is in sync, nothing orphaned.
    drift = repo.runner.run(DRIFT)["Drift"]
    assert drift.outputs["exitcode"] == "0", drift.stdout + drift.stderr
    assert "**No drift.** Drift: 0 drifted, 0 missing, 0 changed elsewhere, 2 in sync" \
        in drift.stdout
