"""Crash safety: ``reconciler apply`` as a real process, SIGKILLed at several points of a run
over many image sets, then run again. The state stays a valid document at every point, the
re-run converges, and no image set is ever written twice (its version count says so)."""

from __future__ import annotations

import pytest
from apply_support import Project, sample_documents, seed_documents, wait_for

from reconciler.emulator.server import ThreadedEmulator

FLEET = 6
PATIENT = "CRASH-0001"


@pytest.fixture
def fleet(tmp_path):
    docs = sample_documents(FLEET, prefix="1.2.826.0.1.3680043.10.99")
    for doc in docs:                      # one patient, many studies: one selector spec
        doc["Patient"]["DICOM"]["PatientID"] = PATIENT
    seeds = seed_documents(tmp_path / "seeds", docs)
    with ThreadedEmulator(seeds=seeds, update_delay=0.05) as emu:
        project = Project(tmp_path / "project", emu, example_specs=False)
        project.write_spec("crash-fleet", {
            "Patient": {"PatientName": "FLEET^PSEUDONYM"},
            "Study": {"StudyDescription": "RECONCILED", "AccessionNumber": None}},
            selector={"DICOMPatientId": PATIENT})
        yield project


def records(project):
    if not project.state_path.exists():
        return {}
    doc = project.check_state_schema()          # valid JSON and schema at every point
    return doc["specs"].get("crash-fleet", {}).get("image_sets", {})


def start(project):
    return project.popen("apply", "--auto-approve", "--max-in-flight", "1")


def kill(proc):
    proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -9


def completed(project):
    return {i: r for i, r in records(project).items() if r["version_after"] is not None}


def check_recorded(project, first):
    """After a kill: the state is valid, what it recorded before is kept, and every record
    names a version that holds the desired values (a record is never ahead of the truth).
    A pending record (a write about to go out when the process died) names the version the
    write went on, the one rollback must go back to. Returns the completed records."""
    everything = records(project)
    for image_set_id, record in everything.items():
        if record["version_after"] is None:
            assert record["version_before"] == "1", image_set_id
    now = completed(project)
    for image_set_id, record in first.items():
        assert now[image_set_id] == record
    for image_set_id, record in now.items():
        version = project.client.get_image_set(datastoreId=project.datastore_id,
                                               imageSetId=image_set_id,
                                               versionId=record["version_after"])
        assert version["imageSetWorkflowStatus"] == "UPDATED"
        doc = project.metadata(image_set_id, record["version_after"])
        assert doc["Study"]["DICOM"]["StudyDescription"] == "RECONCILED"
    return now


def in_flight(project):
    """Image sets whose latest version is an update still LOCKED."""
    backend = project.emu.backend
    with backend.lock:
        return [s.image_set_id for s in backend.image_sets.values() if s.latest.pending]


def test_sigkill_at_several_points_then_rerun_converges(fleet):
    project = fleet
    emu = project.emu
    image_sets = list(emu.image_set_ids)
    assert len(image_sets) == FLEET
    # Every update waits 0.3 s before it is handled: a wide window to be killed in.
    sent = emu.faults.add("UpdateImageSetMetadata", "latency", seconds=0.3)

    # 1. Between image sets: killed once two image sets are recorded.
    proc = start(project)
    wait_for(lambda: len(completed(project)) >= 2 or proc.poll() is not None, timeout=60,
             what="two records")
    kill(proc)
    first = check_recorded(project, {})
    assert 2 <= len(first) < FLEET
    for image_set_id, record in first.items():
        assert (record["version_before"], record["version_after"]) == ("1", "2")
    assert project.state_path.with_name("state.json.lock").exists()   # left behind, stale

    # 2. In the middle of a write: the request is on its way (inside the emulator's latency)
    #    when the process dies; the orphaned request still lands afterwards.
    before = sent.fired
    proc = start(project)
    wait_for(lambda: sent.fired > before or proc.poll() is not None, timeout=60,
             what="the next update to be sent")
    kill(proc)
    check_recorded(project, first)

    # 3. While an accepted update is still LOCKED (the process is waiting for it).
    slow = emu.faults.add("UpdateImageSetMetadata", "lock", seconds=1.0, times=1)
    proc = start(project)
    wait_for(lambda: slow.fired >= 1 or proc.poll() is not None, timeout=60,
             what="an update to be accepted")
    wait_for(lambda: in_flight(project) or proc.poll() is not None, timeout=10,
             what="a LOCKED update")
    kill(proc)
    check_recorded(project, first)

    # 4. The re-run converges, with no image set written twice.
    proc = start(project)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Apply complete" in out
    final = records(project)
    assert set(final) == set(image_sets)
    for image_set_id in image_sets:
        versions = project.versions(image_set_id)
        assert [v["versionId"] for v in versions] == ["1", "2"], image_set_id
        assert versions[-1]["ImageSetWorkflowStatus"] == "UPDATED"
        doc = project.metadata(image_set_id)
        assert doc["Patient"]["DICOM"]["PatientName"] == "FLEET^PSEUDONYM"
        assert doc["Study"]["DICOM"]["StudyDescription"] == "RECONCILED"
        assert "AccessionNumber" not in doc["Study"]["DICOM"]
        record = final[image_set_id]
        assert record["version_after"] == "2"
        assert record["last_operation"] == "apply"
    # A write that landed while its process died unrecorded is adopted by the re-run as
    # "already there", and the pending record saved before it was sent still says which
    # version it went on: every record can be rolled back to the seeded version.
    assert {r["version_before"] for r in final.values()} == {"1"}
    # What was recorded before the first kill is kept as it was.
    for image_set_id, record in first.items():
        assert final[image_set_id] == record
    assert not project.state_path.with_name("state.json.lock").exists()
    leftovers = [p.name for p in project.state_path.parent.iterdir()
                 if p.name.endswith(".tmp")]
    assert leftovers == []

    # And it is converged for plan and drift as well.
    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.stdout
    drift = project.run("drift", "--json")
    assert drift.exit_code == 0
    assert {i["status"] for i in drift.json["image_sets"]} == {"in-sync"}
