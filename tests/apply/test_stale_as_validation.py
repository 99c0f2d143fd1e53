"""A stale ``latestVersionId`` or a write to a LOCKED image set answered with 400
ValidationException instead of 409 (the emulator's ``stale_version_error=validation`` and
``locked_write_error=validation``): every write path re-reads after a 400 and tells a stale
version from a bad request. A stale one behaves exactly as a ConflictException (re-read,
re-diff; a saved plan that no longer holds is stale); a real bad request fails with the
service's message."""

from __future__ import annotations

import threading

import pytest
from apply_support import EXAMPLES_DICOM, check_report, saved_plan, wait_for

from reconciler.emulator.server import ThreadedEmulator

# Not primary: these tests are about single image-set writes, not study updates.
AS_VALIDATION = {"stale_version_error": "validation", "locked_write_error": "validation",
                 "seed_primary": "false"}


@pytest.fixture
def emu():
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02,
                          behaviours=AS_VALIDATION) as emulator:
        yield emulator


def apply_json(project, *args):
    result = project.run("apply", *args, "--json")
    report = check_report(result.json)
    return result, {i["spec"]: i for i in report["image_sets"]}


def test_the_emulator_answers_a_stale_version_with_400(project, ids):
    ct = ids["ct-small"]
    project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDate": "20240105"}}})
    with pytest.raises(project.client.exceptions.ValidationException):
        project.client.update_image_set_metadata(
            datastoreId=project.datastore_id, imageSetId=ct, latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {
                "updatableAttributes": b'{"SchemaVersion":1.1}'}})


def test_saved_plan_converges_after_an_unrelated_out_of_band_edit(project, ids):
    plan = saved_plan(project)
    ct = ids["ct-small"]
    project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDate": "20240105"}}})
    result, items = apply_json(project, plan)
    assert result.exit_code == 0, result.stdout
    assert items["ct-small"]["status"] == "applied"
    assert (items["ct-small"]["version_before"], items["ct-small"]["version_after"]) == ("2", "3")
    doc = project.metadata(ct)
    assert doc["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"        # ours
    assert doc["Study"]["DICOM"]["StudyDate"] == "20240105"            # theirs, kept


def test_saved_plan_is_stale_not_failed_when_a_managed_attribute_moved(project, ids):
    plan = saved_plan(project)
    ct = ids["ct-small"]
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "SMITH^JOHN"}}})
    result, items = apply_json(project, plan)
    assert result.exit_code == 1
    assert items["ct-small"]["status"] == "stale", items["ct-small"]
    assert "moved to version 2" in items["ct-small"]["reason"]
    assert items["ct-small"]["writes"] == 0
    assert project.version_count(ct) == 2
    assert items["nm-bone"]["status"] == items["sc-deid"]["status"] == "applied"


def test_unsaved_apply_rediffs_after_a_write_to_a_locked_image_set(project, ids):
    """The second writer's update is still LOCKED when ours arrives (400 under
    locked_write_error=validation): apply waits for it, re-diffs and writes on top."""
    ct = ids["ct-small"]
    rule = project.emu.faults.add("UpdateImageSetMetadata", "latency", imageSetId=ct,
                                  seconds=0.5, times=1)
    failures = []

    def second_writer():
        try:
            wait_for(lambda: rule.fired >= 1, what="apply's update to arrive")
            project.emu.faults.add("UpdateImageSetMetadata", "lock", imageSetId=ct,
                                   seconds=0.5, times=1)
            project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "SMITH^JOHN",
                                                                   "PatientSex": "F"}}},
                              wait=False)
        except BaseException as exc:   # pragma: no cover - reported below
            failures.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    result, items = apply_json(project, "--auto-approve")
    thread.join()
    assert not failures
    assert result.exit_code == 0, result.stdout
    item = items["ct-small"]
    assert item["status"] == "applied" and item["writes"] == 1
    assert (item["version_before"], item["version_after"]) == ("2", "3")
    doc = project.metadata(ct)
    assert doc["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"         # ours, re-diffed
    assert doc["Patient"]["DICOM"]["PatientSex"] == "F"                 # theirs, kept


def test_a_real_bad_request_still_fails_with_the_service_message(project, ids):
    ct = ids["ct-small"]
    plan = saved_plan(project)
    rule = project.emu.faults.add("UpdateImageSetMetadata", "error", imageSetId=ct,
                                  code="ValidationException", message="injected by the test")
    result, items = apply_json(project, plan)
    assert result.exit_code == 1
    assert rule.fired == 1                                   # sent once, never again
    assert items["ct-small"]["status"] == "failed"
    assert items["ct-small"]["reason"] == "ValidationException: injected by the test"
    assert project.version_count(ct) == 1
    assert items["nm-bone"]["status"] == items["sc-deid"]["status"] == "applied"


def test_rollback_meets_a_concurrent_edit_as_a_conflict(project, applied):
    ct = applied["ct-small"]
    record = project.record("ct-small", ct)
    rule = project.emu.faults.add("UpdateImageSetMetadata", "latency", imageSetId=ct,
                                  seconds=0.5, times=1)
    failures = []

    def second_writer():
        try:
            wait_for(lambda: rule.fired >= 1, what="rollback's revert to arrive")
            project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDate": "20240105"}}})
        except BaseException as exc:   # pragma: no cover - reported below
            failures.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    result = project.run("rollback", "ct-small", "--auto-approve", "--json")
    thread.join()
    assert not failures
    assert result.exit_code == 1
    [item] = check_report(result.json)["image_sets"]
    assert item["status"] == "failed" and item["writes"] == 0
    assert item["reason"].startswith("UpdateImageSetMetadata: ConflictException: ")
    assert "taken as a conflict: the image set is at version 3" in item["reason"]
    assert project.version_count(ct) == 3               # 1, our apply, theirs: no revert
    assert project.record("ct-small", ct) == record      # nothing recorded


def test_rollback_goes_through_under_the_validation_reading(project, applied):
    ct = applied["ct-small"]
    result = project.run("rollback", "ct-small", "--auto-approve", "--json")
    assert result.exit_code == 0, result.stdout
    [item] = check_report(result.json)["image_sets"]
    assert (item["status"], item["version_before"], item["version_after"]) == ("applied", "2", "3")

