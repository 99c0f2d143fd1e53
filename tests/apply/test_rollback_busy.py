"""rollback never writes to an image set that is busy: LOCKED by an update in flight, or
updating for study consistency (a study-wide update of another image set of its study). It
fails that image set, names why, and leaves the state as it was."""

from __future__ import annotations

from apply_support import check_report


def test_rollback_refuses_an_image_set_with_an_update_in_flight(project, applied):
    ct = applied["ct-small"]
    before = project.state()
    # Another writer's update that stays LOCKED for a while.
    project.emu.faults.add("UpdateImageSetMetadata", "lock", imageSetId=ct, seconds=30, times=1)
    project.write_oob(ct, {"Study": {"DICOM": {"StudyDescription": "OTHER"}}}, wait=False)
    busy_version = str(project.version_count(ct))

    result = project.run("rollback", "ct-small", "--auto-approve", "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    [item] = check_report(result.json)["image_sets"]
    assert item["status"] == "failed" and item["writes"] == 0
    assert f"image set {ct} is LOCKED/" in item["reason"] and "busy" in item["reason"]
    # Nothing written: no version beyond the other writer's, the state unchanged.
    assert str(project.version_count(ct)) == busy_version
    assert project.state() == before
