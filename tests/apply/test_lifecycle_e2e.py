"""The whole lifecycle of a managed image set, end to end through the command line and boto3
over HTTP against the emulator: a spec deleted (forgotten by default, reverted when
reconciler.yaml says so), image sets a spec no longer covers (an imageSetId that changed, a
selector whose results shrank), `drift` reporting records whose spec is gone as orphaned, and
saved plans of all that refused as stale when the state or the image set moved.
"""

from __future__ import annotations

import json

import jsonschema
from apply_support import (CT_STUDY, INSTANCE_REMOVAL_REFUSED, PATIENT_CHANGES_REFUSED, REPO_ROOT,
                           strip_generated, wait_for)

PLAN_SCHEMA = json.loads((REPO_ROOT / "schemas" / "plan.v1.schema.json").read_text())
DRIFT_SCHEMA = json.loads((REPO_ROOT / "schemas" / "drift.v1.schema.json").read_text())
MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"


def _plan_json(project, *args):
    result = project.run("plan", "--json", "--no-redact", *args)
    doc = json.loads(result.stdout)
    jsonschema.Draft202012Validator(PLAN_SCHEMA).validate(doc)
    return result, doc


def _drift(project, *args):
    result = project.run("drift", "--json", *args)
    report = json.loads(result.stdout)
    jsonschema.Draft202012Validator(DRIFT_SCHEMA).validate(report)
    return result, {(i["spec"], i["image_set_id"]): i for i in report["image_sets"]}, report


def test_a_deleted_spec_is_planned_as_forgotten_drift_calls_it_orphaned_and_apply_forgets_it(
        project, applied):
    nm = applied["nm-bone"]
    versions = project.version_count(nm)
    (project.specs_dir / "nm-bone.yaml").unlink()

    # The spec is gone: plan says what apply will do with its record, and that is a change.
    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.stderr
    assert (f"  # nm-bone: image set {nm} (data store {project.datastore_id}): spec nm-bone is "
            f"no longer in the specs\n  - forget image set {nm}: its record leaves the state; "
            f"the metadata stays as it is\n") in plan.stdout
    assert "Plan: 0 image sets to update, 2 unchanged, 0 attributes changed; 1 to forget." \
        in plan.stdout
    _, doc = _plan_json(project)
    (entry,) = doc["removed"]
    assert (entry["spec"], entry["image_set_id"], entry["action"]) == ("nm-bone", nm, "forget")
    assert entry["spec_digest"] is None and entry["version_id"] is None
    assert entry["state_serial"] == project.record("nm-bone", nm)["serial"]
    assert doc["summary"]["forget"] == 1 and doc["summary"]["revert"] == 0

    # drift no longer calls it in-sync: orphaned, and exit 2 while it is there.
    result, items, report = _drift(project)
    assert result.exit_code == 2, result.stderr
    assert items[("nm-bone", nm)]["status"] == "orphaned"
    assert "spec nm-bone is no longer in the specs" in items[("nm-bone", nm)]["reason"]
    assert report["summary"]["orphaned"] == 1 and report["summary"]["drifted"] == 0
    text = project.run("drift")
    assert text.exit_code == 2 and f"orphaned          nm-bone: image set {nm}" in text.stdout
    assert "1 orphaned" in text.stdout

    serial = project.state()["serial"]
    saved = project.run("plan", "--out", "plan.json")
    assert saved.exit_code == 0, saved.stderr
    applied_run = project.run("apply", "plan.json")
    assert applied_run.exit_code == 0, applied_run.stdout + applied_run.stderr
    assert f"  forgotten nm-bone: image set {nm} version" in applied_run.stdout
    assert "Apply complete: 2 unchanged, 1 forgotten." in applied_run.stdout
    state = project.check_state_schema()
    assert "nm-bone" not in state["specs"] and state["serial"] == serial + 1
    assert project.version_count(nm) == versions            # the metadata was not touched

    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    after = project.run("drift")
    assert after.exit_code == 0 and "orphaned" not in after.stdout
    listed = project.run("state", "list")
    assert "nm-bone" not in listed.stdout and "ct-small" in listed.stdout


def test_a_removed_spec_marked_revert_goes_back_to_the_version_before_the_first_apply(
        project, applied):
    ct = applied["ct-small"]
    original = project.metadata(ct, 1)
    # A second apply: version_before is now the version of the first apply, not the original.
    path = project.specs_dir / "ct-small.yaml"
    path.write_text(path.read_text().replace("StudyDescription: CT CHEST",
                                             "StudyDescription: CT CHEST 2"))
    assert project.run("apply", "--auto-approve").exit_code == 0
    record = project.record("ct-small", ct)
    assert record["version_origin"] == "1" and record["version_before"] != "1"
    live = project.latest(ct)["versionId"]

    path.unlink()
    project.write_config({**project.config, "removed": [
        {"spec": "ct-small", "action": "revert", "reason": "RAD-77 wrong study"}]})
    plan = project.run("plan", "--no-redact", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.stderr
    assert (f"  # ct-small: image set {ct} (data store {project.datastore_id}, version {live}): "
            f"spec ct-small is no longer in the specs\n  #   RAD-77 wrong study\n"
            f"  - revert image set {ct} to version 1 {{\n") in plan.stdout
    if not PATIENT_CHANGES_REFUSED:      # (else the example spec carries no Patient block)
        assert '~ PatientName: "DOE^JANE" -> "CompressedSamples^CT1"' in plan.stdout
    assert '~ AccessionNumber: "ACC-0042" -> null' in plan.stdout
    assert "1 image set to revert." in plan.stdout
    redacted = project.run("plan", ci=True)
    assert "ACC-0042" not in redacted.stdout and "<redacted SH" in redacted.stdout
    assert "DOE^JANE" not in redacted.stdout
    _, doc = _plan_json(project)
    (entry,) = doc["removed"]
    assert (entry["action"], entry["version_id"], entry["target_version"]) == ("revert", live, "1")
    assert entry["study"].startswith("study-") and CT_STUDY not in json.dumps(doc)
    assert {c["key"] for c in entry["changes"]} >= {"AccessionNumber", "StudyDescription"} | (
        set() if PATIENT_CHANGES_REFUSED else {"PatientName"})

    assert project.run("plan", "--out", "plan.json").exit_code == 0
    result = project.run("apply", "plan.json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert (f"  reverted  ct-small: image set {ct} version {live} -> {int(live) + 1}: spec "
            f"ct-small is no longer in the specs: reverted to the content of version 1") \
        in result.stdout
    assert strip_generated(project.metadata(ct)) == strip_generated(original)
    assert "ct-small" not in project.check_state_schema()["specs"]
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    assert project.run("drift").exit_code == 0


def test_a_saved_plan_of_removals_is_stale_when_the_record_or_the_image_set_moved(
        project, applied):
    ct, nm, sc = applied["ct-small"], applied["nm-bone"], applied["sc-deid"]
    (project.specs_dir / "ct-small.yaml").unlink()
    (project.specs_dir / "nm-bone.yaml").unlink()
    sc_spec = project.specs_dir / "sc-deid.yaml"
    sc_text = sc_spec.read_text()
    sc_spec.unlink()
    project.write_config({**project.config, "removed": [{"spec": "ct-small", "action": "revert"}]})
    assert project.run("plan", "--out", "plan.json").exit_code == 0
    sc_spec.write_text(sc_text)           # the pull request that deleted it was reverted
    # Behind the plan's back: the record of nm-bone changes (state mv), ct-small's image set
    # moves on (another writer).
    assert project.run("state", "mv", "nm-bone", "nm-bone-2").exit_code == 0
    project.write_oob(ct, {"Study": {"DICOM": {"StudyDescription": "EDITED"}}})
    versions = project.version_count(ct)

    result = project.run("apply", "plan.json")
    assert result.exit_code == 1, result.stdout
    assert f"  stale     nm-bone: image set {nm}" in result.stdout
    assert "its record in the state changed since the plan was made" in result.stdout
    assert f"  stale     ct-small: image set {ct}" in result.stdout
    assert "the revert was reviewed on version" in result.stdout
    assert f"  stale     sc-deid: image set {sc} version" in result.stdout
    assert "spec sc-deid is in the specs again; plan again" in result.stdout
    assert project.version_count(ct) == versions       # nothing unreviewed was written
    assert project.record("ct-small", ct) is not None
    assert project.record("nm-bone-2", nm) is not None
    assert project.record("sc-deid", sc) is not None


def test_an_image_set_a_spec_no_longer_targets_is_forgotten_and_the_new_one_planned(
        project, ids):
    ct, mr = ids["ct-small"], project.image_set_of(MR_STUDY)
    for path in project.specs_dir.glob("*.yaml"):
        path.unlink()
    project.write_spec("one", {"Study": {"StudyDescription": "ONE"}}, image_set_id=ct)
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_spec("one", {"Study": {"StudyDescription": "ONE"}}, image_set_id=mr)

    result, items, _ = _drift(project)
    assert result.exit_code == 2
    assert items[("one", ct)]["status"] == "orphaned"
    assert f"spec one now targets image set {mr}" in items[("one", ct)]["reason"]
    assert items[("one", mr)]["status"] == "not-applied"

    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2
    assert f"spec one no longer targets image set {ct}\n  - forget image set {ct}" in plan.stdout
    assert "1 image set to update" in plan.stdout and "; 1 to forget." in plan.stdout
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"forgotten one: image set {ct}" in result.stdout
    specs = project.check_state_schema()["specs"]
    assert list(specs["one"]["image_sets"]) == [mr]
    assert project.run("plan", "--detailed-exitcode").exit_code == 0


def test_a_selector_whose_results_shrank_forgets_only_the_image_set_it_no_longer_finds(
        project, ids):
    """A patient merge: the MR study briefly carried the CT patient's id, so a selector on
    that id found both; once corrected, it finds the CT study alone. (Where the reading
    refuses every Patient change to a primary image set, an accession number mix-up between
    the two studies stands in.)"""
    ct, mr = ids["ct-small"], project.image_set_of(MR_STUDY)
    for path in project.specs_dir.glob("*.yaml"):
        path.unlink()
    if PATIENT_CHANGES_REFUSED:
        level, keyword, key, merged, corrected = (
            "Study", "AccessionNumber", "DICOMAccessionNumber", "A-MERGED", "A-MR")
        project.write_oob(ct, {level: {"DICOM": {keyword: merged}}})
    else:
        level, keyword, key, merged, corrected = (
            "Patient", "PatientID", "DICOMPatientId", "1CT1", "4MR1")
    project.write_oob(mr, {level: {"DICOM": {keyword: merged}}})

    def found() -> set[str]:
        pages = project.client.get_paginator("search_image_sets").paginate(
            datastoreId=project.datastore_id,
            searchCriteria={"filters": [{"operator": "EQUAL", "values": [{key: merged}]}]})
        return {s["imageSetId"] for page in pages for s in page["imageSetsMetadataSummaries"]}

    wait_for(lambda: found() == {ct, mr}, timeout=30, what="the merged value in search")
    project.write_spec("patient", {"Study": {"StudyDescription": "MERGED"}},
                       selector={key: merged})
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert set(project.state()["specs"]["patient"]["image_sets"]) == {ct, mr}

    project.write_oob(mr, {level: {"DICOM": {keyword: corrected}}})
    wait_for(lambda: found() == {ct}, timeout=30, what="the corrected value in search")
    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.stderr
    assert f"spec patient no longer targets image set {mr}\n  - forget image set {mr}" \
        in plan.stdout
    assert f"image set {ct}" not in plan.stdout.split("forget image set")[0].split("#")[-1]
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert set(project.state()["specs"]["patient"]["image_sets"]) == {ct}


def test_only_the_whole_project_lets_a_missing_spec_count_as_removed(project, applied):
    (project.specs_dir / "nm-bone.yaml").unlink()
    # Some spec files named on the command line, or --target: the others are not removed.
    partial = project.run("plan", "--detailed-exitcode", str(project.specs_dir / "ct-small.yaml"))
    assert partial.exit_code == 0 and "forget" not in partial.stdout
    targeted = project.run("plan", "--detailed-exitcode", "--target", "ct-*")
    assert targeted.exit_code == 0 and "forget" not in targeted.stdout
    result, items, _ = _drift(project, str(project.specs_dir / "ct-small.yaml"))
    assert items[("nm-bone", applied["nm-bone"])]["status"] != "orphaned"
    # The whole specs directory named is the whole project.
    whole = project.run("plan", "--detailed-exitcode", str(project.specs_dir))
    assert whole.exit_code == 2 and f"forget image set {applied['nm-bone']}" in whole.stdout
    aimed = project.run("plan", "--detailed-exitcode", "--target", "nm-*")
    assert aimed.exit_code == 2 and "1 to forget" in aimed.stdout


def test_a_revert_of_an_image_set_another_spec_targets_is_refused_at_plan(project, applied):
    ct = applied["ct-small"]
    (project.specs_dir / "ct-small.yaml").unlink()
    project.write_spec("ct-other", {"Study": {"ReferringPhysicianName": "DR^WHO"}},
                       image_set_id=ct)
    project.write_config({**project.config, "removed": [{"spec": "ct-small", "action": "revert"}]})
    versions = project.version_count(ct)
    plan = project.run("plan", "--out", "plan.json")
    assert plan.exit_code == 1
    assert (f"ct-small: image set {ct}: error: image set {ct} is to be reverted, but spec "
            f"ct-other targets it") in plan.stdout
    apply = project.run("apply", "--auto-approve")
    assert apply.exit_code == 1 and "could not be planned; nothing was applied" in apply.stderr
    assert project.version_count(ct) == versions


def test_a_revert_shows_what_else_it_undoes_and_restores_a_removed_instance(project, applied):
    """revertToVersionId restores the whole document: the plan lists, by path, what else
    differs from the target version (here another writer's AccessionNumber), and a removed
    instance comes back."""
    nm = applied["nm-bone"]
    project.write_oob(nm, {"Study": {"DICOM": {"AccessionNumber": "ELSEWHERE-1"}}})
    (project.specs_dir / "nm-bone.yaml").unlink()
    project.write_config({**project.config, "removed": [{"spec": "nm-bone", "action": "revert"}]})
    plan = project.run("plan", "--no-redact")
    assert plan.exit_code == 0, plan.stderr
    assert f"  - revert image set {nm} to version 1 {{" in plan.stdout
    assert '~ StudyDescription: "NM WHOLE BODY BONE" -> ' in plan.stdout
    assert ("# revertToVersionId restores the whole document of version 1: it also changes "
            "1 item no spec of this one manages: Study.AccessionNumber") in plan.stdout
    lossy = "1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457"
    if not INSTANCE_REMOVAL_REFUSED:
        assert f"+ Instance {lossy} (the whole instance, restored)" in plan.stdout
    markdown = project.run("plan", "--format", "markdown", ci=True)
    assert f"| nm-bone | `{nm}` | revert to version 1 |" in markdown.stdout
    assert "NM WHOLE BODY BONE" not in markdown.stdout
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert strip_generated(project.metadata(nm)) == strip_generated(project.metadata(nm, 1))


def test_a_deleted_image_set_cannot_be_reverted_and_state_rm_is_the_way_out(project, applied):
    nm = applied["nm-bone"]
    (project.specs_dir / "nm-bone.yaml").unlink()
    project.write_config({**project.config, "removed": [{"spec": "nm-bone", "action": "revert"}]})
    project.delete(nm)
    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 1
    assert (f"nm-bone: image set {nm}: error: image set {nm} is DELETED: there is nothing to "
            f"revert; forget it instead: reconciler state rm nm-bone --image-set-id {nm}") \
        in plan.stdout
    assert project.run("state", "rm", "nm-bone", "--image-set-id", nm).exit_code == 0
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
