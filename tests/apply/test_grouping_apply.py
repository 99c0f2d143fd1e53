"""Study updates end to end: plan, apply, drift and rollback through the command line and boto3
over HTTP against the emulator, on a study of three primary image sets.

The study is the bundled CT study (seeded as one image set) plus two more primary image sets
of the same StudyInstanceUID, each with a series of its own, as an import of a study in
several parts makes them. The UpdateImageSetMetadata calls the emulator receives are counted
with a fault rule that does nothing (a zero latency).
"""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from plan_files import read_plan

from apply_support import (CT_STUDY, PATIENT_CHANGES_REFUSED, Element, Project, check_report,
                           dicom_update, spec_attributes, strip_generated)

# The study-wide change the specs ask for: a Patient and a Study element. Where the reading
# refuses every Patient change to a primary image set, even study-wide
# (PATIENT_CHANGES_REFUSED; that refusal is asserted below, on this study by
# test_a_patient_change_to_the_study_under_each_reading, and in tests/apply/test_apply_e2e.py
# and tests/matrix/test_readings.py), a second Study element stands in for the Patient one:
# the same study update, two elements of each member.
if PATIENT_CHANGES_REFUSED:
    NAMED, NAME = Element("Study", "NameOfPhysiciansReadingStudy", "PN"), "DOE^GROUPED"
else:
    NAMED, NAME = Element("Patient", "PatientName", "PN"), "DOE^GROUPED"
DESCRIPTION = "GROUPED STUDY"
DESCRIBED = Element("Study", "StudyDescription", "LO")
ATTRIBUTES = spec_attributes((NAMED, NAME), (DESCRIBED, DESCRIPTION))
PATIENT_ATTRIBUTES = {"Patient": {"PatientName": NAME},
                      "Study": {"StudyDescription": DESCRIPTION}}


def _peer_id(n: int) -> str:
    return hashlib.sha256(f"peer-{n}".encode()).hexdigest()[:32]


@pytest.fixture
def study(emu, tmp_path, monkeypatch):
    """A project without example specs, and the three primary image sets of the CT study
    (sorted: the first is the group's leader)."""
    project = Project(tmp_path / "project", emu, example_specs=False)
    monkeypatch.chdir(project.root)
    first = project.image_set_of(CT_STUDY)
    # These tests are about a study of primary image sets: the seed is made primary even
    # under seed_primary=false (test setup through the Python API, like the two peers below).
    emu.backend.image_sets[first].is_primary = True
    doc = emu.backend.metadata(first, version=1)
    ids = [first]
    for n in (1, 2):
        peer = copy.deepcopy(doc)
        series = {}
        for uid, body in peer["Study"]["Series"].items():
            body["DICOM"]["SeriesInstanceUID"] = f"{uid}.{n}"
            series[f"{uid}.{n}"] = body
        peer["Study"]["Series"] = series
        ids.append(emu.backend.add_image_set(emu.datastore_id, peer, image_set_id=_peer_id(n),
                                             is_primary=True).image_set_id)
    project.ids = sorted(ids)
    project.original = {i: project.metadata(i) for i in ids}
    return project


def _updates(emu):
    """A rule that counts the UpdateImageSetMetadata calls from now on."""
    return emu.faults.add("UpdateImageSetMetadata", "latency", seconds=0)


def _study_spec(project, name="ct-study"):
    project.write_spec(name, ATTRIBUTES, selector={"DICOMStudyInstanceUID": CT_STUDY})


def _plan(project, *extra, ci=False):
    result = project.run("plan", "--out", "plan.json", *extra, ci=ci)
    assert result.exit_code == 0, result.stderr
    return read_plan(project.root / "plan.json"), result


def test_a_study_needing_one_change_is_one_request_applied_verified_recorded(study, emu):
    _study_spec(study)
    searches = emu.faults.add("SearchImageSets", "latency", seconds=0)
    doc, result = _plan(study)
    assert searches.fired == 1      # the selector's search listed the study: no second one
    assert doc["image_sets"] == []
    (group,) = doc["groups"]
    assert group["leader"] == study.ids[0]
    assert [m["image_set_id"] for m in group["members"]] == study.ids
    assert all(m["version_id"] == "1" and m["spec"] == "ct-study" for m in group["members"])
    assert len(group["requests"]) == 1 and group["requests"][0]["includeStudyImageSets"]
    assert CT_STUDY not in json.dumps(doc)      # the study is named by a hash, never its UID
    assert doc["summary"] == {"update": 3, "unchanged": 0, "error": 0,
                              "attributes_changed": 6, "requests": 1}
    assert "study update study-" in result.stdout
    assert "(3 primary image sets)" in result.stdout
    assert "Plan: 3 image sets to update in 1 request (1 study update)" in result.stdout
    shown = study.run("show", "plan.json", "--format", "markdown")
    assert "(3 primary image sets)" in shown.stdout and "1 request" in shown.stdout

    updates = _updates(emu)
    applied = study.run("apply", "plan.json", "--json")
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    report = check_report(applied.json)
    assert updates.fired == 1
    items = {i["image_set_id"]: i for i in report["image_sets"]}
    assert set(items) == set(study.ids)
    assert [items[i]["writes"] for i in study.ids] == [1, 0, 0]
    for image_set_id in study.ids:
        item = items[image_set_id]
        assert (item["status"], item["version_before"], item["version_after"]) == \
            ("applied", "1", "2")
        assert study.version_count(image_set_id) == 2
        live = study.metadata(image_set_id)
        assert NAMED.of(live) == NAME
        assert live["Study"]["DICOM"]["StudyDescription"] == DESCRIPTION
        record = study.record("ct-study", image_set_id)
        assert (record["version_before"], record["version_after"]) == ("1", "2")
    study.check_state_schema()

    drift = study.run("drift", "--json")
    assert drift.exit_code == 0, drift.stdout
    assert {i["status"] for i in drift.json["image_sets"]} == {"in-sync"}

    again = study.run("plan", "--json")
    assert again.json["summary"]["update"] == 0 and again.json["groups"] == []

    rolled = study.run("rollback", "ct-study", "--auto-approve", "--json")
    assert rolled.exit_code == 0, rolled.stdout + rolled.stderr
    assert {i["status"] for i in rolled.json["image_sets"]} == {"applied"}
    for image_set_id in study.ids:
        live = study.metadata(image_set_id)
        assert live["Patient"] == study.original[image_set_id]["Patient"]
        assert live["Study"]["DICOM"] == study.original[image_set_id]["Study"]["DICOM"]


def test_a_primary_image_set_no_spec_targets_is_a_peer_changed_shown_and_recorded(study, emu):
    for n, image_set_id in enumerate(study.ids[:2]):
        study.write_spec(f"part-{n}", ATTRIBUTES, image_set_id=image_set_id)
    doc, result = _plan(study)
    (group,) = doc["groups"]
    assert doc["image_sets"] == [] and doc["summary"]["requests"] == 1
    peer = study.ids[2]
    assert [(m["image_set_id"], m["spec"], m["peer"]) for m in group["members"]] == [
        (study.ids[0], "part-0", False), (study.ids[1], "part-1", False), (peer, "part-0", True)]
    assert {c["key"] for c in group["members"][2]["changes"]} == {NAMED.key,
                                                                 "StudyDescription"}
    assert "no spec targets it: changed for study consistency" in result.stdout
    updates = _updates(emu)
    applied = study.run("apply", "plan.json", "--json")
    assert applied.exit_code == 0, applied.stdout
    assert updates.fired == 1
    assert NAMED.of(study.metadata(peer)) == NAME
    record = study.record("part-0", peer)            # drift and rollback see the peer
    assert (record["version_before"], record["version_after"]) == ("1", "2")
    assert sorted(record["hashes"]) == sorted([NAMED.path, "Study.StudyDescription"])
    study.write_oob(peer, updatable=dicom_update((NAMED, "SOMEONE^ELSE")))
    drift = study.run("drift", "--json")
    assert drift.exit_code == 2
    drifted = {(i["spec"], i["image_set_id"]) for i in drift.json["image_sets"]
               if i["status"] == "drifted"}
    assert ("part-0", peer) in drifted      # (the other writer's change went study-wide too)


def test_specs_asking_different_values_of_one_study_are_a_plan_error_naming_both(study, emu):
    for n, image_set_id in enumerate(study.ids):
        attributes = copy.deepcopy(ATTRIBUTES)
        if n == 2:
            attributes["Study"]["StudyDescription"] = "ANOTHER"
        study.write_spec(f"part-{n}", attributes, image_set_id=image_set_id)
    updates = _updates(emu)
    result = study.run("apply", "--auto-approve")
    assert result.exit_code == 1 and updates.fired == 0
    assert "and part-2 want different values of Study.StudyDescription" in result.stdout


def _series_specs(study):
    series_uid = next(iter(study.original[study.ids[0]]["Study"]["Series"]))
    for n, image_set_id in enumerate(study.ids):
        attributes = copy.deepcopy(ATTRIBUTES)
        if n == 0:
            attributes["Series"] = {series_uid: {"SeriesDescription": "AXIAL"}}
        study.write_spec(f"part-{n}", attributes, image_set_id=image_set_id)
    return series_uid


def test_a_series_level_change_to_a_primary_image_set_is_refused_before_any_write(study, emu):
    _series_specs(study)
    updates = _updates(emu)
    result = study.run("apply", "--auto-approve")
    assert result.exit_code == 1 and updates.fired == 0
    assert "Series-level elements cannot be updated on a primary image set" in result.stdout
    assert "CopyImageSet" in result.stdout           # the way out is named
    assert [study.version_count(i) for i in study.ids] == [1, 1, 1]


def test_an_account_whose_service_allows_series_changes_says_so(study, emu):
    emu.backend.settings.behaviours.set("primary_restricted_levels", "patient_study")
    # (and, as the config below says by leaving studyWideUpdates at its default, allows
    # Patient/Study changes study-wide, whatever the session's reading says)
    emu.backend.settings.behaviours.set("primary_restriction_include_study", "allowed")
    study.write_config({**study.config,
                        "primaryImageSets": {"restrictedLevels": ["Patient", "Study"]}})
    series_uid = _series_specs(study)
    doc, _ = _plan(study)
    (group,) = doc["groups"]
    assert doc["image_sets"] == []                   # the leader's series change rides along
    assert series_uid in group["requests"][0]["updatableAttributes"]
    updates = _updates(emu)
    assert study.run("apply", "plan.json").exit_code == 0
    assert updates.fired == 1
    live = study.metadata(study.ids[0])["Study"]["Series"][series_uid]["DICOM"]
    assert live["SeriesDescription"] == "AXIAL"


def test_per_image_set_requests_where_the_account_allows_them(study, emu):
    emu.backend.settings.behaviours.set("primary_restricted_levels", "off")
    study.write_config({**study.config, "primaryImageSets": {"studyConsistent": False,
                                                             "restrictedLevels": []}})
    _study_spec(study)
    doc, _ = _plan(study)
    assert doc["groups"] == [] and len(doc["image_sets"]) == 3
    assert doc["summary"]["requests"] == 3
    updates = _updates(emu)
    assert study.run("apply", "plan.json").exit_code == 0
    assert updates.fired == 3


def test_study_consistency_off_where_the_service_restricts_patient_changes_is_refused(study):
    study.write_config({**study.config, "groupStudies": False})    # the older key
    # (a Patient change under every reading: refused at plan before any write)
    study.write_spec("ct-study", PATIENT_ATTRIBUTES, selector={"DICOMStudyInstanceUID": CT_STUDY})
    result = study.run("plan")
    assert result.exit_code == 1
    assert "Patient-level elements cannot be updated on a primary image set" in result.stdout


def test_an_unmanaged_change_to_a_member_after_the_plan_is_written_on_top(study, emu):
    _study_spec(study)
    _plan(study)
    member = study.ids[1]
    study.write_oob(member, updatable={"Study": {"DICOM": {"ReferringPhysicianName": "X^Y"}}})
    updates = _updates(emu)
    result = study.run("apply", "plan.json", "--json")
    assert result.exit_code == 0, result.stdout
    assert updates.fired == 1   # the member check saw it move: re-read, then the same request
    assert study.metadata(member)["Study"]["DICOM"]["ReferringPhysicianName"] == "X^Y"
    assert study.record("ct-study", member)["version_before"] == "2"   # rollback keeps theirs


def test_a_managed_change_to_a_member_after_the_plan_makes_the_update_stale(study, emu):
    _study_spec(study)
    _plan(study)
    member = study.ids[1]
    study.write_oob(member, updatable=dicom_update((NAMED, "SMITH^JOHN")))
    updates = _updates(emu)
    result = study.run("apply", "plan.json", "--json")
    assert result.exit_code == 1
    assert updates.fired == 0                    # the member check saw it: nothing sent
    items = check_report(result.json)["image_sets"]
    assert {i["status"] for i in items} == {"stale"} and len(items) == 3
    assert all("moved to version 2" in i["reason"] and "plan again" in i["reason"]
               for i in items)
    assert [study.version_count(i) for i in study.ids] == [2, 2, 2]   # theirs, study-wide
    assert not study.state_path.exists() or all(
        study.record("ct-study", i) is None for i in study.ids)


def test_a_new_primary_image_set_of_the_study_makes_the_group_stale(study, emu):
    _study_spec(study)
    _plan(study)
    newcomer = copy.deepcopy(study.original[study.ids[0]])
    emu.backend.add_image_set(emu.datastore_id, newcomer, image_set_id=_peer_id(9))
    updates = _updates(emu)
    result = study.run("apply", "plan.json", "--json")
    assert result.exit_code == 1
    assert updates.fired == 0
    assert {i["status"] for i in result.json["image_sets"]} == {"stale"}


@pytest.mark.parametrize("fault, writes", [
    ("conflict", 1),      # refused before the write, nothing moved: the request is sent again
    ("error_after", 0),   # committed, then a 500: botocore's retry meets a 409; found landed
])
def test_a_fault_on_the_leaders_write_ends_with_one_version_per_member(study, emu, fault,
                                                                          writes):
    _study_spec(study)
    _plan(study)
    emu.faults.add("UpdateImageSetMetadata", fault, imageSetId=study.ids[0], times=1)
    result = study.run("apply", "plan.json", "--json")
    assert result.exit_code == 0, result.stdout
    items = {i["image_set_id"]: i for i in result.json["image_sets"]}
    assert {i["status"] for i in items.values()} == {"applied"}
    assert items[study.ids[0]]["writes"] == writes
    assert [study.version_count(i) for i in study.ids] == [2, 2, 2]
    for image_set_id in study.ids:
        assert study.record("ct-study", image_set_id)["version_before"] == "1"
        assert study.record("ct-study", image_set_id)["version_after"] == "2"


def test_a_redacted_plan_shows_no_values(study):
    _study_spec(study)
    # (the stand-in Study element of PATIENT_CHANGES_REFUSED is absent from the seed: no
    # original value to leak there)
    originals = [v for v in (NAMED.of(study.original[study.ids[0]]),) if v is not None]
    assert originals or PATIENT_CHANGES_REFUSED
    for args in (["--json"], [], ["--format", "markdown"]):
        result = study.run("plan", *args, ci=True)
        assert result.exit_code == 0, result.stderr
        for value in (NAME, *originals, CT_STUDY):
            assert value not in result.stdout, (args, value)
        assert "study update" in result.stdout or "groups" in result.stdout
    doc = study.run("plan", "--json", ci=True).json
    (group,) = doc["groups"]
    assert group["requests"][0]["updatableAttributes"]["redacted"] is True
    assert all(m["before_digest"] is None for m in group["members"])


@pytest.mark.parametrize("told", [False, True], ids=["config-default", "config-says-refused"])
def test_a_patient_change_to_the_study_under_each_reading(study, emu, reading, told):
    """A spec on each of the three primary image sets asks one Patient change (and one Study
    change). Where the session's reading refuses Patient changes to primary image sets even
    study-wide: told so by reconciler.yaml (primaryImageSets.studyWideUpdates: refused), the
    plan refuses it before any write, for each spec; not told, the one study-wide request is
    refused by the service (atomically: no member changes), and the next plan says it cannot
    converge, for each spec. Elsewhere the one request changes all three."""
    refused = (reading.behaviour("primary_restricted_levels") != "off"
               and reading.behaviour("primary_restriction_include_study") == "refused")
    if told:
        study.write_config({**study.config, "primaryImageSets": {
            "studyWideUpdates": "refused" if refused else "allowed"}})
    for n, image_set_id in enumerate(study.ids):
        study.write_spec(f"part-{n}", PATIENT_ATTRIBUTES, image_set_id=image_set_id)
    updates = _updates(emu)
    result = study.run("apply", "--auto-approve")
    if not refused:
        assert result.exit_code == 0, result.stdout + result.stderr
        assert updates.fired == 1
        assert {study.metadata(i)["Patient"]["DICOM"]["PatientName"] for i in study.ids} \
            == {NAME}
        return
    assert result.exit_code == 1, result.stdout + result.stderr
    if told:
        assert updates.fired == 0 and "nothing was applied" in result.stderr
        for n, image_set_id in enumerate(study.ids):
            assert (f"# part-{n}: image set {image_set_id}: error: image set {image_set_id} "
                    "is a primary image set") in result.stdout
        assert result.stdout.count("cannot be updated on a primary image set even in a "
                                   "study-wide update") == 3
        assert "CopyImageSet" in result.stdout           # the way out is named
    else:
        assert updates.fired == 1                        # the one study-wide request
        assert "Patient-level attributes cannot be updated on a primary image set" \
            in result.stdout
        again = study.run("plan", "--json")
        assert again.exit_code == 1, again.stdout + again.stderr
        assert again.json["groups"] == []
        errors = {(e["spec"], e["image_set_id"]): e["error"] for e in again.json["image_sets"]}
        assert set(errors) == {(f"part-{n}", i) for n, i in enumerate(study.ids)}
        assert all("cannot converge" in error for error in errors.values())
    for image_set_id in study.ids:                       # nothing changed, on any member
        assert study.metadata(image_set_id)["Patient"] == study.original[image_set_id]["Patient"]
        assert (study.metadata(image_set_id)["Study"]["DICOM"]
                == study.original[image_set_id]["Study"]["DICOM"])


def test_peers_stay_managed_with_their_leader_and_are_reverted_with_its_removed_spec(study):
    """The peers a study update recorded under the leader's spec are covered as long as the
    leader is: plan and drift after the apply leave them alone. When the spec is removed with
    `action: revert`, the leader and its peers all go back to their versions before."""
    leader = study.ids[1]
    study.write_spec("one-part", ATTRIBUTES, image_set_id=leader)
    assert study.run("apply", "--auto-approve").exit_code == 0
    peers = [i for i in study.ids if i != leader]
    for peer in peers:
        assert study.record("one-part", peer)["peer_of"] == leader
    assert study.run("plan", "--detailed-exitcode").exit_code == 0     # nothing removed
    drift = study.run("drift", "--json")
    assert drift.exit_code == 0, drift.stdout
    assert {i["status"] for i in drift.json["image_sets"]} == {"in-sync"}
    listed = study.run("state", "list").stdout
    assert all(f"peer of {leader}" in line for line in listed.splitlines() if leader not in
               line.split("\t")[1])

    (study.specs_dir / "one-part.yaml").unlink()
    study.write_config({**study.config, "removed": [{"spec": "one-part", "action": "revert"}]})
    doc, result = _plan(study)
    assert sorted((e["image_set_id"], e["action"], e["target_version"])
                  for e in doc["removed"]) == sorted((i, "revert", "1") for i in study.ids)
    applied = study.run("apply", "plan.json")
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    assert applied.stdout.count("reverted  one-part: image set") == 3
    for image_set_id in study.ids:
        assert strip_generated(study.metadata(image_set_id)) == \
            strip_generated(study.original[image_set_id])
    assert study.state()["specs"] == {}
