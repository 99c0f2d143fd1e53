"""apply end to end through the command line: a saved plan and ``--auto-approve``; the
values, the untouched rest of each document, one version per changed image set, idempotence,
the report (human and ``--json``) and the exit codes."""

from __future__ import annotations

import json

import pytest

from apply_support import (EXAMPLE_SPECS, INSTANCE_REMOVAL_REFUSED, PATIENT_CHANGES_REFUSED,
                           READING, Project, check_report, without_paths)
from matrix import readings

CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_INSTANCE = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
NM_SERIES = "1.3.6.1.4.1.5962.1.3.8.1.20040826185059.5457"
NM_REMOVED = "1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457"

# What each example spec manages, as paths in the metadata document.
MANAGED = {
    "ct-small": [("Patient", "DICOM", "PatientName"), ("Patient", "DICOM", "PatientBirthDate"),
                 ("Study", "DICOM", "StudyDescription"), ("Study", "DICOM", "AccessionNumber"),
                 ("Study", "Series", CT_SERIES, "DICOM", "SeriesDescription"),
                 ("Study", "Series", CT_SERIES, "Instances", CT_INSTANCE, "DICOM",
                  "ImageComments")],
    "nm-bone": [("Study", "DICOM", "StudyDescription"),
                ("Study", "Series", NM_SERIES, "Instances", NM_REMOVED)],
    "sc-deid": [("Patient", "DICOM", "PatientName"), ("Patient", "DICOM", "PatientID"),
                ("Study", "DICOM", "ReferringPhysicianName")],
}
REPORT_KEYS = {"format_version", "reconciler_version", "operation", "finished_at", "summary",
               "image_sets"}
ITEM_KEYS = {"spec", "datastore_id", "image_set_id", "status", "reason", "version_before",
             "version_after", "writes", "response"}
# The example plan's size: one attribute fewer where the reading refuses nm-bone's instance
# removal, four fewer (ct-small's and sc-deid's Patient elements) where it refuses every
# Patient change, and the example specs are written without them (readings.spec_for_reading);
# on primary seeds each spec is a study update, on non-primary ones (seed_primary=false) a
# plain per-image-set request.
EXAMPLE_ATTRIBUTES = 10 - (1 if INSTANCE_REMOVAL_REFUSED else 0) - (
    4 if PATIENT_CHANGES_REFUSED else 0)
EXAMPLE_PLAN = ("Plan: 3 image sets to update"
                + (" in 3 requests (3 study updates)"
                   if READING.behaviour("seed_primary") == "true" else "")
                + f", 0 unchanged, {EXAMPLE_ATTRIBUTES} attributes changed.")
RESPONSE_KEYS = {"latestVersionId", "imageSetState", "imageSetWorkflowStatus", "message",
                 "createdAt", "updatedAt"}


def check_desired(project, ids):
    ct = project.metadata(ids["ct-small"])
    if PATIENT_CHANGES_REFUSED:    # (not in the specs then: the Patient level as imported)
        for image_set_id in (ids["ct-small"], ids["sc-deid"]):
            assert (project.metadata(image_set_id)["Patient"]
                    == project.metadata(image_set_id, 1)["Patient"])
    else:
        assert ct["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"
        assert ct["Patient"]["DICOM"]["PatientBirthDate"] == "19700101"
    assert ct["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"
    assert ct["Study"]["DICOM"]["AccessionNumber"] == "ACC-0042"
    series = ct["Study"]["Series"][CT_SERIES]
    assert series["Instances"][CT_INSTANCE]["DICOM"]["ImageComments"] == "reviewed"
    nm = project.metadata(ids["nm-bone"])
    assert nm["Study"]["DICOM"]["StudyDescription"] == "NM WHOLE BODY BONE"
    # (left in the image set where the reading refuses the removal: not in the spec then)
    assert (NM_REMOVED in nm["Study"]["Series"][NM_SERIES]["Instances"]) is (
        INSTANCE_REMOVAL_REFUSED)
    assert nm["Study"]["Series"][NM_SERIES]["Instances"]      # the other instance stays
    sc = project.metadata(ids["sc-deid"])
    if not PATIENT_CHANGES_REFUSED:
        assert sc["Patient"]["DICOM"]["PatientName"] == "ANON^0001"
        assert sc["Patient"]["DICOM"]["PatientID"] == "ANON0001"
    assert "ReferringPhysicianName" not in sc["Study"]["DICOM"]


def all_image_sets(project):
    return list(project.emu.image_set_ids)


def test_saved_plan_apply_end_to_end(project, ids):
    everything = all_image_sets(project)
    before = {i: project.metadata(i) for i in everything}
    assert all(project.version_count(i) == 1 for i in everything)

    planned = project.run("plan", "--out", "plan.json", "--detailed-exitcode")
    assert planned.exit_code == 2, planned.stderr
    assert EXAMPLE_PLAN in planned.stdout
    assert not project.state_path.exists()           # plan writes no state
    assert all(project.version_count(i) == 1 for i in everything)   # nor anything else

    applied = project.run("apply", str(project.root / "plan.json"), "--json")
    assert applied.exit_code == 0, applied.stderr
    report = check_report(applied.json)
    assert set(report) == REPORT_KEYS
    assert report["operation"] == "apply"
    assert report["summary"] == {"applied": 3, "unchanged": 0, "stale": 0, "failed": 0,
                                 "skipped": 0, "missing": 0}
    by_spec = {item["spec"]: item for item in report["image_sets"]}
    assert set(by_spec) == set(ids)
    for name, item in by_spec.items():
        assert set(item) == ITEM_KEYS
        assert item["image_set_id"] == ids[name]
        assert item["datastore_id"] == project.datastore_id
        assert (item["status"], item["version_before"], item["version_after"], item["writes"]) \
            == ("applied", "1", "2", 1)
        assert set(item["response"]) == RESPONSE_KEYS
        assert item["response"]["latestVersionId"] == "2"
        assert item["response"]["imageSetState"] == "ACTIVE"
        assert item["response"]["imageSetWorkflowStatus"] == "UPDATED"
        assert item["response"]["createdAt"] and item["response"]["updatedAt"]

    check_desired(project, ids)
    # Exactly one new version per changed image set, none for the others.
    for name, image_set_id in ids.items():
        versions = project.versions(image_set_id)
        assert [v["versionId"] for v in versions] == ["1", "2"]
        assert versions[1]["ImageSetWorkflowStatus"] == "UPDATED"
        assert not versions[1].get("overrides", {}).get("forced")   # no spec says force
    for image_set_id in set(everything) - set(ids.values()):
        assert project.version_count(image_set_id) == 1
        assert project.metadata(image_set_id) == before[image_set_id]
    # Everything the specs do not manage is exactly as it was.
    for name, image_set_id in ids.items():
        after = project.metadata(image_set_id)
        assert without_paths(after, MANAGED[name]) == without_paths(before[image_set_id],
                                                                     MANAGED[name])

    # The state: one record per image set, versions 1 -> 2.
    state = project.check_state_schema()
    # A pending record saved before each write and the outcome after it: two writes per
    # image set at most, fewer when workers' saves share one write (group commit).
    assert 2 <= state["serial"] <= 6
    for name, image_set_id in ids.items():
        record = state["specs"][name]["image_sets"][image_set_id]
        assert (record["version_before"], record["version_after"], record["last_operation"]) \
            == ("1", "2", "apply")

    # Converged: plan has nothing to do; apply again writes no version and keeps the state.
    again = project.run("plan", "--detailed-exitcode")
    assert again.exit_code == 0, again.stdout
    assert "No changes." in again.stdout
    assert "Plan: 0 image sets to update, 3 unchanged, 0 attributes changed." in again.stdout
    reapplied = project.run("apply", "--auto-approve", "--json")
    assert reapplied.exit_code == 0, reapplied.stderr
    assert reapplied.json["summary"]["unchanged"] == 3
    assert reapplied.json["summary"]["applied"] == 0
    assert all(item["writes"] == 0 for item in reapplied.json["image_sets"])
    assert all(project.version_count(i) == 2 for i in ids.values())
    # The rollback point of the apply that changed something is kept: a no-op apply does not
    # move it (nor rewrite the state at all).
    assert project.state()["specs"] == state["specs"]
    assert project.state()["serial"] == state["serial"]


def test_auto_approve_applies_specs_and_reports(project, ids):
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.stderr
    # The plan is shown first, then one line per image set and the summary.
    assert EXAMPLE_PLAN in result.stdout
    for name, image_set_id in ids.items():
        assert f"applied   {name}: image set {image_set_id} version 1 -> 2" in result.stdout
    assert result.stdout.rstrip().endswith("Apply complete: 3 applied.")
    check_desired(project, ids)
    assert all(project.version_count(i) == 2 for i in ids.values())

    again = project.run("apply", "--auto-approve")
    assert again.exit_code == 0
    assert "No changes." in again.stdout
    assert "Apply complete: 3 unchanged." in again.stdout
    assert all(project.version_count(i) == 2 for i in ids.values())


def test_apply_paths_limits_to_those_specs(project, ids):
    result = project.run("apply", str(project.specs_dir / "sc-deid.yaml"), "--auto-approve",
                         "--json")
    assert result.exit_code == 0, result.stderr
    assert [(i["spec"], i["status"]) for i in result.json["image_sets"]] == [("sc-deid", "applied")]
    assert project.version_count(ids["sc-deid"]) == 2
    assert project.version_count(ids["ct-small"]) == 1
    assert project.version_count(ids["nm-bone"]) == 1
    assert set(project.state()["specs"]) == {"sc-deid"}


def test_apply_without_terminal_or_approval_refuses(project, ids):
    result = project.run("apply", input="yes\n")     # stdin is not a terminal
    assert result.exit_code == 1
    assert "refusing to apply without a terminal" in result.stderr
    assert "nothing was written" in result.stderr
    assert all(project.version_count(i) == 1 for i in ids.values())
    assert not project.state_path.exists()


def test_apply_json_prints_only_the_report(project, ids):
    result = project.run("apply", "--auto-approve", "--json")
    assert result.exit_code == 0
    assert result.stdout.lstrip().startswith("{")     # no plan text before the document
    assert result.json["summary"]["applied"] == 3
    # Written in pieces as it is encoded, it is the document as json.dumps indents it.
    assert result.stdout == json.dumps(result.json, indent=2, ensure_ascii=False) + "\n"
    lines = project.run("drift").stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["in-sync"] * 3
    assert lines[3].startswith("Drift: 0 drifted")
    assert all(line.startswith("Note: ") for line in lines[4:])  # a note, when judged by listing
    drift = project.run("drift", "--json")
    assert drift.stdout == json.dumps(drift.json, indent=2, ensure_ascii=False) + "\n"


def test_saved_plan_with_nothing_to_do(project, ids):
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert project.run("plan", "--out", "noop.json").exit_code == 0
    result = project.run("apply", str(project.root / "noop.json"), "--json")
    assert result.exit_code == 0, result.stderr
    assert {i["status"] for i in result.json["image_sets"]} == {"unchanged"}
    assert all(project.version_count(i) == 2 for i in ids.values())
    assert {name: project.record(name, i)["version_before"] for name, i in ids.items()} \
        == {name: "1" for name in ids}


def test_exit_code_one_and_report_when_an_image_set_fails(project, ids):
    """One failure (UPDATE_FAILED injected) → exit 1; the others are applied and listed."""
    project.emu.faults.add("UpdateImageSetMetadata", "update_failed", imageSetId=ids["nm-bone"],
                           message="INVALID_REQUEST: injected for the report test", times=1)
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "Apply finished with problems: 2 applied, 1 failed." in result.stdout
    assert f"failed    nm-bone: image set {ids['nm-bone']}" in result.stdout
    assert "INVALID_REQUEST: injected for the report test" in result.stdout


def test_force_is_sent_only_when_the_spec_says_so_and_a_change_needs_it(project, ids):
    ct, nm = ids["ct-small"], ids["nm-bone"]
    for name in ("ct-small", "nm-bone", "sc-deid"):
        (project.specs_dir / f"{name}.yaml").unlink()
    # force applies only to non-primary image sets (the emulator's primary_force); these two
    # stand for non-primary copies.
    for image_set_id in (ct, nm):
        project.emu.backend.image_sets[image_set_id].is_primary = False
    # StudyID needs force; the spec allows it.
    project.write_spec("ct-studyid", {"Study": {"StudyID": "CT-42"}}, image_set_id=ct, force=True)
    # force: true, but nothing here needs it: it is not sent.
    project.write_spec("nm-desc", {"Study": {"StudyDescription": "NM"}}, image_set_id=nm,
                       force=True)
    result = project.run("apply", "--auto-approve", "--json")
    assert result.exit_code == 0, result.stderr
    assert project.versions(ct)[-1]["overrides"]["forced"] is True
    assert project.metadata(ct)["Study"]["DICOM"]["StudyID"] == "CT-42"
    assert not project.versions(nm)[-1].get("overrides", {}).get("forced")


def test_a_bad_spec_stops_apply_before_anything_is_sent(project, ids):
    """A StudyID change without force: the spec check refuses it, and with it the whole
    apply: the other (valid) specs are not applied either, and no state is written."""
    project.write_spec("ct-studyid", {"Study": {"StudyID": "CT-42"}},
                       image_set_id=ids["nm-bone"])
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "changing StudyID needs force: true" in result.stderr
    assert result.stdout == ""
    assert all(project.version_count(i) == 1 for i in ids.values())
    assert not project.state_path.exists()


def test_apply_json_says_why_when_the_plan_has_errors(project, ids):
    nm = ids["nm-bone"]
    (project.specs_dir / "nm-bone.yaml").unlink()
    project.write_spec("nm-by-id", {"Study": {"StudyDescription": "X"}}, image_set_id=nm)
    project.delete(nm)
    result = project.run("apply", "--auto-approve", "--json")
    assert result.exit_code == 1
    assert all(project.version_count(i) == 1 for n, i in ids.items() if n != "nm-bone")
    assert "could not be planned; nothing was applied" in result.stderr
    plan = json.loads(result.stdout)                            # the plan says which and why
    [failed] = [e for e in plan["image_sets"] if e["action"] == "error"]
    assert failed["image_set_id"] == nm


def test_the_example_instance_removal_under_each_reading(tmp_path, emu, monkeypatch, reading):
    """nm-bone as shipped (its lossy instance removed) on the primary seeded NM image set.
    Where the reading makes an instance removal need force (remove_instance_needs_force),
    which a primary image set refuses, the service refuses the request: the product says
    so (failed, the service's reason, exit 1), writes nothing else, and does not call the
    spec converged. Otherwise the removal applies."""
    project = Project(tmp_path / "project", emu, example_specs=False)
    monkeypatch.chdir(project.root)
    (project.specs_dir / "nm-bone.yaml").write_text((EXAMPLE_SPECS / "nm-bone.yaml").read_text())
    nm = project.image_set_of("1.3.6.1.4.1.5962.1.2.8.20040826185059.5457")
    result = project.run("apply", "--auto-approve", "--json")
    [item] = check_report(result.json)["image_sets"]
    instances = project.metadata(nm)["Study"]["Series"][NM_SERIES]["Instances"]
    if not INSTANCE_REMOVAL_REFUSED:
        assert result.exit_code == 0, result.stderr
        assert item["status"] == "applied" and NM_REMOVED not in instances
        return
    assert reading.behaviour("remove_instance_needs_force") == "true"
    assert result.exit_code == 1
    assert (item["spec"], item["image_set_id"], item["status"]) == ("nm-bone", nm, "failed")
    assert item["response"]["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    # (the spec does not say force, so none is sent: the service's reason is the force)
    assert "removing an instance requires force" in item["reason"]
    assert NM_REMOVED in instances and len(instances) == 2            # nothing removed
    assert project.metadata(nm)["Study"]["DICOM"]["StudyDescription"] != "NM WHOLE BODY BONE"
    assert [v["ImageSetWorkflowStatus"] for v in project.versions(nm)] == [
        "IMPORTED", "UPDATE_FAILED"]
    # Not converged: the next plan does not call nm-bone unchanged.
    again = project.run("plan", "--json")
    assert again.exit_code != 0
    [planned] = again.json["image_sets"]
    assert planned["spec"] == "nm-bone" and planned["action"] != "no-op"


@pytest.mark.parametrize("told", [False, True], ids=["config-default", "config-says-refused"])
def test_patient_changes_to_primary_image_sets_under_each_reading(tmp_path, emu, monkeypatch,
                                                                  reading, told):
    """ct-small and sc-deid change Patient elements of primary seeds. Where the service
    refuses them even study-wide, the product sends the study update and reports the
    service's refusal (nothing changed), or, when reconciler.yaml says so
    (primaryImageSets.studyWideUpdates: refused), refuses at plan before any write.
    Elsewhere they apply. (The specs as shipped: the e2e tests' Project leaves their Patient
    blocks out under such a reading, readings.spec_for_reading.)"""
    refused = readings.refuses_patient_changes(reading)
    project = Project(tmp_path / "project", emu, example_specs=False)
    monkeypatch.chdir(project.root)
    for name in ("ct-small.yaml", "sc-deid.yaml"):
        (project.specs_dir / name).write_text((EXAMPLE_SPECS / name).read_text())
    if told:
        project.write_config({**project.config, "primaryImageSets": {
            "studyWideUpdates": "refused" if refused else "allowed"}})
    ids = {name: project.image_set_of(study) for name, study in (
        ("ct-small", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"),
        ("sc-deid", "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114"))}
    before = {i: project.metadata(i) for i in ids.values()}
    result = project.run("apply", "--auto-approve")
    if not refused:
        assert result.exit_code == 0, result.stdout + result.stderr
        assert result.stdout.rstrip().endswith("Apply complete: 2 applied.")
        return
    assert result.exit_code == 1
    if told:
        assert "nothing was applied" in result.stderr
        for name, image_set_id in ids.items():
            assert (f"# {name}: image set {image_set_id}: error: image set {image_set_id} is "
                    "a primary image set") in result.stdout
        assert result.stdout.count("cannot be updated on a primary image set even in a "
                                   "study-wide update") == 2
        assert all(project.version_count(i) == 1 for i in ids.values())
    else:
        assert "Apply finished with problems: 2 failed." in result.stdout
        for name, image_set_id in ids.items():
            assert (f"failed    {name}: image set {image_set_id}: UPDATE_FAILED: "
                    "INVALID_REQUEST: Patient.DICOM.PatientName: Patient-level attributes "
                    "cannot be updated on a primary image set") in result.stdout
            assert [v["ImageSetWorkflowStatus"] for v in project.versions(image_set_id)] == [
                "IMPORTED", "UPDATE_FAILED"]
    for image_set_id in ids.values():       # the study update is atomic: nothing changed
        assert project.metadata(image_set_id) == before[image_set_id]
