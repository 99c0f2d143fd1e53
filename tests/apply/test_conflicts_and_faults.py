"""Every conflict branch of the applier and every fault the service can throw at apply, with
a real second writer (boto3, between plan and apply or in the middle of apply) and with the
emulator's fault injection. Each test checks the versions the image set went through, the
values, the report and the state — not only the exit code."""

from __future__ import annotations

import json
import threading

import pytest
from plan_files import read_plan

from apply_support import (CT_MANAGED, CT_UNMANAGED, CT_WANTED, PATIENT_CHANGES_REFUSED,
                           Element, Project, check_report, dicom_update, sample_documents,
                           saved_plan, seed_documents, wait_for)
from reconciler.emulator.server import ThreadedEmulator

CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
STUDY_DATE = Element("Study", "StudyDate", "DA")


def apply_json(project, *args):
    result = project.run("apply", *args, "--json")
    report = check_report(result.json) if result.stdout.strip().startswith("{") else None
    items = {i["spec"]: i for i in report["image_sets"]} if report else {}
    return result, report, items


def versions(project, image_set_id):
    return [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in project.versions(image_set_id)]


def patient(project, image_set_id, version=None):
    return project.metadata(image_set_id, version)["Patient"]["DICOM"]


def study(project, image_set_id, version=None):
    return project.metadata(image_set_id, version)["Study"]["DICOM"]


# -- (a) the desired state is already there ---------------------------------------------------
def test_desired_state_already_there_is_success_without_a_write(project, ids):
    plan = saved_plan(project)
    sc = ids["sc-deid"]
    # Someone else makes exactly our change first (sc-deid's removal alone where the reading
    # refuses Patient changes: the spec is written without its Patient block there).
    project.write_oob(sc, updatable=None if PATIENT_CHANGES_REFUSED else {"Patient": {"DICOM": {
                          "PatientName": "ANON^0001", "PatientID": "ANON0001"}}},
                      removable={"Study": {"DICOM": {"ReferringPhysicianName": "Moriarty^James"}}})
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 0, result.stderr
    assert items["sc-deid"]["status"] == "unchanged"
    assert items["sc-deid"]["writes"] == 0
    assert items["sc-deid"]["version_after"] == "2"
    assert "already there" in items["sc-deid"]["reason"]
    assert versions(project, sc) == [("1", "IMPORTED"), ("2", "UPDATED")]   # no third version
    assert items["ct-small"]["status"] == items["nm-bone"]["status"] == "applied"
    record = project.record("sc-deid", sc)
    assert record["version_after"] == "2"


# -- (b) saved plan, a managed attribute changed behind our back: stale -------------------------
@pytest.mark.parametrize("change", ["managed value", "value of a removal"])
def test_saved_plan_is_stale_when_a_managed_attribute_changed(project, ids, change):
    plan = saved_plan(project)
    if change == "managed value":
        target, spec = ids["ct-small"], "ct-small"
        project.write_oob(target, updatable=dicom_update((CT_MANAGED, "SMITH^JOHN")))
    else:   # the removal we reviewed carries a value that is no longer the current one
        target, spec = ids["sc-deid"], "sc-deid"
        project.write_oob(target, updatable={"Study": {"DICOM": {
            "ReferringPhysicianName": "Holmes^Sherlock"}}})
    moved = project.metadata(target)
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 1
    assert items[spec]["status"] == "stale"
    assert items[spec]["writes"] == 0
    assert "moved to version 2" in items[spec]["reason"] and "plan again" in items[spec]["reason"]
    assert project.version_count(target) == 2                    # nothing unreviewed written
    assert project.metadata(target) == moved
    assert project.record(spec, target) is None                  # and nothing recorded
    others = set(ids) - {spec}
    assert {items[o]["status"] for o in others} == {"applied"}   # independent image sets go on
    assert report["summary"]["stale"] == 1


# -- (c) saved plan, only unmanaged attributes changed: applied on the new version ---------------
def test_saved_plan_applies_on_top_of_unmanaged_changes(project, ids):
    plan = saved_plan(project)
    ct = ids["ct-small"]
    project.write_oob(ct, updatable=dicom_update((STUDY_DATE, "20240105"), (CT_UNMANAGED, "F")))
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 0, result.stderr
    item = items["ct-small"]
    assert (item["status"], item["writes"], item["version_after"]) == ("applied", 1, "3")
    assert versions(project, ct) == [("1", "IMPORTED"), ("2", "UPDATED"), ("3", "UPDATED")]
    doc = project.metadata(ct)
    assert CT_MANAGED.of(doc) == CT_WANTED                             # ours
    assert doc["Study"]["DICOM"]["StudyDate"] == "20240105"            # theirs, kept
    assert CT_UNMANAGED.of(doc) == "F"
    # Our write went on top of version 2: rolling back our apply must go back to version 2,
    # not to 1 (which would also undo the other writer's change).
    assert item["version_before"] == "2"
    record = project.record("ct-small", ct)
    assert (record["version_before"], record["version_after"]) == ("2", "3")


# -- (d) no saved plan: the fresh diff is sent --------------------------------------------------
def test_unsaved_apply_sends_the_new_diff_after_a_conflict(project, ids):
    """A second writer changes a managed attribute *while* apply is on its way (after the
    plan, before the write lands): apply meets 409, re-reads, re-diffs and sends the new diff."""
    ct = ids["ct-small"]
    rule = project.emu.faults.add("UpdateImageSetMetadata", "latency", imageSetId=ct,
                                  seconds=0.8, times=1)
    errors = []

    def second_writer():
        try:
            wait_for(lambda: rule.fired >= 1, what="apply's update to arrive")
            project.write_oob(ct, updatable=dicom_update((CT_MANAGED, "SMITH^JOHN"),
                                                         (CT_UNMANAGED, "F")))
        except BaseException as exc:   # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    result = project.run("apply", str(project.specs_dir / "ct-small.yaml"), "--auto-approve",
                         "--json")
    thread.join()
    assert not errors, errors
    assert result.exit_code == 0, result.stderr
    item = result.json["image_sets"][0]
    assert (item["status"], item["writes"], item["version_after"]) == ("applied", 1, "3")
    assert versions(project, ct) == [("1", "IMPORTED"), ("2", "UPDATED"), ("3", "UPDATED")]
    doc = project.metadata(ct)
    assert CT_MANAGED.of(doc) == CT_WANTED                             # the fresh diff put it back
    assert CT_UNMANAGED.of(doc) == "F"                                 # unmanaged: kept
    instances = doc["Study"]["Series"][CT_SERIES]["Instances"]
    assert next(iter(instances.values()))["DICOM"]["ImageComments"] == "reviewed"   # ours too


def test_saved_plan_with_concurrent_managed_change_mid_apply_is_stale(project, ids):
    """The same race under a saved plan: nothing unreviewed may be written."""
    ct = ids["ct-small"]
    plan = saved_plan(project)
    rule = project.emu.faults.add("UpdateImageSetMetadata", "latency", imageSetId=ct,
                                  seconds=0.8, times=1)
    thread = threading.Thread(target=lambda: (
        wait_for(lambda: rule.fired >= 1),
        project.write_oob(ct, updatable=dicom_update((CT_MANAGED, "SMITH^JOHN")))))
    thread.start()
    result, report, items = apply_json(project, plan)
    thread.join()
    assert result.exit_code == 1
    assert items["ct-small"]["status"] == "stale"
    assert versions(project, ct) == [("1", "IMPORTED"), ("2", "UPDATED")]
    assert CT_MANAGED.of(project.metadata(ct)) == "SMITH^JOHN"


# -- the retry hazard: 500 after the write committed ---------------------------------------------
@pytest.mark.parametrize("saved", [True, False], ids=["saved-plan", "auto-approve"])
def test_500_after_commit_converges_with_exactly_one_new_version(project, ids, saved):
    ct = ids["ct-small"]
    rule = project.emu.faults.add("UpdateImageSetMetadata", "error_after", imageSetId=ct, times=1)
    args = [saved_plan(project)] if saved else ["--auto-approve"]
    result, report, items = apply_json(project, *args)
    assert rule.fired == 1
    assert result.exit_code == 0, result.stderr
    item = items["ct-small"]
    # Our write landed (behind the 500); botocore's retry met 409; the re-read found the
    # desired state: exactly one new version, and it is reported as what it is: applied.
    assert versions(project, ct) == [("1", "IMPORTED"), ("2", "UPDATED")]
    assert (item["status"], item["version_before"], item["version_after"]) == ("applied", "1", "2")
    assert "had landed" in item["reason"]
    assert CT_MANAGED.of(project.metadata(ct)) == CT_WANTED
    record = project.record("ct-small", ct)
    assert (record["version_before"], record["version_after"]) == ("1", "2")
    assert report["summary"]["applied"] == 3


def test_500_before_the_write_is_retried(project, ids):
    ct, sc = ids["ct-small"], ids["sc-deid"]
    once = project.emu.faults.add("UpdateImageSetMetadata", "error", imageSetId=ct, times=1)
    # More 500s than botocore's five attempts: the engine's own retry takes over.
    many = project.emu.faults.add("UpdateImageSetMetadata", "error", imageSetId=sc, times=6)
    result, report, items = apply_json(project, saved_plan(project))
    assert result.exit_code == 0, result.stderr
    assert (once.fired, many.fired) == (1, 6)
    for name in ("ct-small", "sc-deid"):
        assert (items[name]["status"], items[name]["writes"]) == ("applied", 1)
        assert versions(project, ids[name]) == [("1", "IMPORTED"), ("2", "UPDATED")]
    assert "ReferringPhysicianName" not in study(project, sc)
    if not PATIENT_CHANGES_REFUSED:     # (else sc-deid is written without its Patient block)
        assert patient(project, sc)["PatientID"] == "ANON0001"


def test_forced_conflicts_are_reread_and_resent(project, ids):
    nm = ids["nm-bone"]
    rule = project.emu.faults.add("UpdateImageSetMetadata", "conflict", imageSetId=nm, times=2)
    result, report, items = apply_json(project, saved_plan(project))
    assert result.exit_code == 0, result.stderr
    assert rule.fired == 2
    assert (items["nm-bone"]["status"], items["nm-bone"]["writes"]) == ("applied", 1)
    assert versions(project, nm) == [("1", "IMPORTED"), ("2", "UPDATED")]
    assert study(project, nm)["StudyDescription"] == "NM WHOLE BODY BONE"


def test_endless_conflicts_give_up_with_a_clear_error(project, ids):
    nm = ids["nm-bone"]
    project.emu.faults.add("UpdateImageSetMetadata", "conflict", imageSetId=nm)
    result, report, items = apply_json(project, saved_plan(project))
    assert result.exit_code == 1
    assert items["nm-bone"]["status"] == "failed"
    assert "gave up after 5 attempts" in items["nm-bone"]["reason"]
    assert project.version_count(nm) == 1
    assert items["ct-small"]["status"] == "applied"


# -- asynchronous failures ----------------------------------------------------------------------
def test_update_failed_is_reported_with_the_service_message(project, ids):
    nm = ids["nm-bone"]
    project.emu.faults.add("UpdateImageSetMetadata", "update_failed", imageSetId=nm, times=1,
                           message="INVALID_REQUEST: the archive refused this change")
    result, report, items = apply_json(project, saved_plan(project))
    assert result.exit_code == 1
    item = items["nm-bone"]
    assert item["status"] == "failed"
    assert item["reason"] == "UPDATE_FAILED: INVALID_REQUEST: the archive refused this change"
    assert item["writes"] == 1
    assert item["response"]["latestVersionId"] == "2"
    assert item["response"]["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    # UPDATE_FAILED consumes a version but keeps the content.
    assert versions(project, nm) == [("1", "IMPORTED"), ("2", "UPDATE_FAILED")]
    assert project.metadata(nm, 2)["Study"] == project.metadata(nm, 1)["Study"]
    assert project.record("nm-bone", nm) is None                 # not recorded as applied
    assert items["ct-small"]["status"] == items["sc-deid"]["status"] == "applied"
    # The service refused this very request: the next plan says it cannot converge instead of
    # proposing it again, and nothing is written.
    refused = project.run("plan", "--json")
    assert refused.exit_code == 1
    [entry] = [e for e in refused.json["image_sets"] if e["spec"] == "nm-bone"]
    assert entry["action"] == "error" and "cannot converge" in entry["error"]
    assert "UPDATE_FAILED" in entry["error"] and "--retry-refused" in entry["error"]
    assert "archive refused" not in json.dumps(project.state())   # no message kept
    assert project.version_count(nm) == 2
    # Told to, a second run sends it again and converges; the refusal is forgotten.
    again, _, items = apply_json(project, "--auto-approve", "--retry-refused")
    assert again.exit_code == 0
    assert (items["nm-bone"]["status"], items["nm-bone"]["version_after"]) == ("applied", "3")
    assert project.record("nm-bone", nm)["version_before"] == "2"
    assert "refusals" not in project.state()
    assert project.run("plan", "--detailed-exitcode").exit_code == 0


def test_update_locked_longer_than_the_wait_bound(project, ids):
    ct = ids["ct-small"]
    project.emu.faults.add("UpdateImageSetMetadata", "lock", imageSetId=ct, seconds=30, times=1)
    result, report, items = apply_json(project, saved_plan(project), "--wait-timeout", "0.5")
    assert result.exit_code == 1
    item = items["ct-small"]
    assert item["status"] == "failed"
    assert item["reason"].startswith("version 2 stayed LOCKED for more than")
    assert project.latest(ct)["imageSetState"] == "LOCKED"
    assert project.record("ct-small", ct) is None
    assert items["nm-bone"]["status"] == items["sc-deid"]["status"] == "applied"
    assert project.record("nm-bone", ids["nm-bone"]) is not None
    # Once the image set is unlocked, a re-run finds the change there and records it.
    project.emu.backend.complete_pending()
    again, _, items = apply_json(project, "--auto-approve")
    assert again.exit_code == 0, again.stderr
    assert items["ct-small"]["status"] == "unchanged"
    assert project.version_count(ct) == 2


def test_image_set_deleted_between_plan_and_apply_is_missing(project, ids):
    plan = saved_plan(project)
    nm = ids["nm-bone"]
    project.delete(nm)
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 1
    assert items["nm-bone"]["status"] == "missing"
    assert items["nm-bone"]["writes"] == 0
    assert report["summary"]["missing"] == 1
    assert project.record("nm-bone", nm) is None
    assert items["ct-small"]["status"] == items["sc-deid"]["status"] == "applied"


# -- throttling -----------------------------------------------------------------------------
def test_throttling_bursts_are_retried(project, ids):
    # More throttles than botocore's own attempts on the write, and a burst on the polls
    # that wait for the write to complete.
    plan = saved_plan(project)
    writes = project.emu.faults.add("UpdateImageSetMetadata", "throttle", times=7)
    polls = project.emu.faults.add("GetImageSet", "throttle", times=6)
    result, report, items = apply_json(project, plan, "--max-in-flight", "1")
    assert result.exit_code == 0, result.stderr
    assert (writes.fired, polls.fired) == (7, 6)
    assert report["summary"]["applied"] == 3
    assert all(project.version_count(i) == 2 for i in ids.values())


# -- --fail-fast ----------------------------------------------------------------------------
def test_fail_fast_stops_further_writes(project, ids):
    ct = ids["ct-small"]           # the first image set of the plan
    project.emu.faults.add("UpdateImageSetMetadata", "update_failed", imageSetId=ct, times=1)
    result, report, items = apply_json(project, saved_plan(project), "--fail-fast",
                                       "--max-in-flight", "1")
    assert result.exit_code == 1
    assert items["ct-small"]["status"] == "failed"
    for name in ("nm-bone", "sc-deid"):
        assert items[name]["status"] == "skipped"
        assert "--fail-fast" in items[name]["reason"]
        assert project.version_count(ids[name]) == 1
    assert report["summary"]["skipped"] == 2
    # The pending record saved before the failed write was taken back: nothing recorded.
    assert not project.state_path.exists() or project.state()["specs"] == {}


def test_access_denied_stops_every_further_write(project, ids):
    ct = ids["ct-small"]
    project.emu.faults.add("UpdateImageSetMetadata", "error", imageSetId=ct,
                           code="AccessDeniedException", message="not for you")
    result, report, items = apply_json(project, saved_plan(project), "--max-in-flight", "1")
    assert result.exit_code == 1
    assert items["ct-small"]["status"] == "failed"
    assert "AccessDeniedException" in items["ct-small"]["reason"]
    assert {items[n]["status"] for n in ("nm-bone", "sc-deid")} == {"skipped"}
    assert all(project.version_count(i) == 1 for i in ids.values())


# -- two specs on one image set ------------------------------------------------------------
def test_two_specs_on_one_image_set(project, ids):
    ct = ids["ct-small"]
    project.write_spec("ct-extra", {CT_UNMANAGED.level: {CT_UNMANAGED.key: "F"}},
                       image_set_id=ct)
    plan = saved_plan(project)
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 0, result.stderr
    assert items["ct-small"]["status"] == items["ct-extra"]["status"] == "applied"
    assert project.version_count(ct) == 3                   # one write per spec
    assert CT_UNMANAGED.of(project.metadata(ct)) == "F"
    assert CT_MANAGED.of(project.metadata(ct)) == CT_WANTED


def test_stale_spec_does_not_block_another_spec_of_the_same_image_set(project, ids):
    ct = ids["ct-small"]
    project.emu.backend.image_sets[ct].is_primary = False    # entries of their own
    project.write_spec("ct-extra", {"Patient": {"PatientSex": "F"}}, image_set_id=ct)
    plan = saved_plan(project)
    project.write_spec("ct-extra", {"Patient": {"PatientSex": "M"}}, image_set_id=ct)
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 1
    assert items["ct-extra"]["status"] == "stale"
    assert items["ct-small"]["status"] == "applied"          # its own entry is not stale
    assert CT_MANAGED.of(project.metadata(ct)) == CT_WANTED
    assert patient(project, ct)["PatientSex"] == "O"                 # as it was


def test_on_a_primary_image_set_a_stale_spec_stops_the_study_update_it_shares(project, ids):
    """Both specs' Patient changes travel in one study update (one request): the reviewed
    request holds the stale spec's change, so none of it is sent."""
    ct = ids["ct-small"]
    project.emu.backend.image_sets[ct].is_primary = True     # (also under seed_primary=false)
    project.write_spec("ct-extra", {"Patient": {"PatientSex": "F"}}, image_set_id=ct)
    plan = saved_plan(project)
    assert [sorted(m["spec"] for m in g["members"]) for g in read_plan(
        project.root / plan)["groups"] if g["leader"] == ct] \
        == [["ct-extra", "ct-small"]]
    project.write_spec("ct-extra", {"Patient": {"PatientSex": "M"}}, image_set_id=ct)
    result, report, items = apply_json(project, plan)
    assert result.exit_code == 1
    assert items["ct-extra"]["status"] == items["ct-small"]["status"] == "stale"
    assert "ct-extra" in items["ct-small"]["reason"]
    assert project.version_count(ct) == 1                            # nothing written


# -- errors that are not retried --------------------------------------------------------------
@pytest.mark.parametrize("code, status, halts", [
    ("ValidationException", "failed", False),
    ("ResourceNotFoundException", "missing", False),
    ("ServiceQuotaExceededException", "failed", True),
])
def test_errors_that_are_not_retried(project, ids, code, status, halts):
    ct = ids["ct-small"]                      # the first image set of the plan
    plan = saved_plan(project)
    rule = project.emu.faults.add("UpdateImageSetMetadata", "error", imageSetId=ct, code=code,
                                  message="injected by the test")
    result, report, items = apply_json(project, plan, "--max-in-flight", "1")
    assert result.exit_code == 1
    assert rule.fired == 1                                       # sent once, never again
    assert items["ct-small"]["status"] == status
    assert "injected by the test" in items["ct-small"]["reason"]
    assert project.version_count(ct) == 1
    others = {items[n]["status"] for n in ("nm-bone", "sc-deid")}
    assert others == ({"skipped"} if halts else {"applied"})


# -- a change too large for one request: sequential requests --------------------------------
def test_split_requests_survive_a_conflict_between_them(tmp_path, monkeypatch, reading):
    """Changes over the 30 000-byte document limit go as two sequential requests; a
    conflict between them is re-read, and only the reviewed remainder is sent."""
    doc = sample_documents(1, prefix="1.2.826.0.1.3680043.10.55")[0]
    series_uid, series = next(iter(doc["Study"]["Series"].items()))
    first_uid, first = next(iter(series["Instances"].items()))
    instances = {}
    for n in range(4):
        uid = f"{first_uid}.{n + 1}"
        instance = json.loads(json.dumps(first))
        instance["DICOM"]["SOPInstanceUID"] = uid
        instances[uid] = instance
    series["Instances"] = instances
    seeds = seed_documents(tmp_path / "seeds", [doc])
    with ThreadedEmulator(seeds=seeds, update_delay=0.02) as emu:
        project = Project(tmp_path / "project", emu, example_specs=False)
        monkeypatch.chdir(project.root)
        comment = "REVIEWED " * 1000                       # 9 000 bytes per instance
        project.write_spec("big", {"Series": {series_uid: {"Instances": {
            uid: {"ImageComments": comment.strip()} for uid in instances}}}},
            image_set_id=emu.image_set_ids[0])
        plan = saved_plan(project)
        entry = read_plan(plan)["image_sets"][0]
        assert len(entry["requests"]) == 2
        image_set_id = emu.image_set_ids[0]
        limit = reading.behaviour("blob_max_bytes")
        if limit < 30000:
            # A service whose limit is below the 30 000 bytes the requests were cut to (the
            # blob_max_bytes reading) refuses the first one: a clear failure, nothing written.
            result, report, items = apply_json(project, plan)
            assert result.exit_code == 1, result.stdout
            item = items["big"]
            assert (item["status"], item["writes"], item["version_after"]) == ("failed", 0, None)
            assert "ValidationException" in item["reason"] and f"{limit}" in item["reason"]
            assert project.version_count(image_set_id) == 1
            return
        # The first write stays LOCKED a little; meanwhile a conflict is armed for the next.
        slow = emu.faults.add("UpdateImageSetMetadata", "lock", seconds=0.3, times=1)
        armed = []
        thread = threading.Thread(target=lambda: (
            wait_for(lambda: slow.fired >= 1),
            armed.append(emu.faults.add("UpdateImageSetMetadata", "conflict", times=1))))
        thread.start()
        result, report, items = apply_json(project, plan)
        thread.join()
        assert result.exit_code == 0, result.stderr
        assert armed and armed[0].fired == 1
        item = items["big"]
        assert (item["status"], item["writes"], item["version_before"], item["version_after"]) \
            == ("applied", 2, "1", "3")
        assert [v["versionId"] for v in project.versions(image_set_id)] == ["1", "2", "3"]
        live = project.metadata(image_set_id)["Study"]["Series"][series_uid]["Instances"]
        assert {uid: i["DICOM"]["ImageComments"] for uid, i in live.items()} \
            == {uid: comment.strip() for uid in instances}
