"""rollback through the command line: apply, roll back, and the image set is its old self
again (as a new version), recorded in the state, in sync for drift, and planned again."""

from __future__ import annotations

import pytest

from apply_support import (CT_MANAGED, PATIENT_CHANGES_REFUSED, READING, check_report,
                           strip_generated)

# ct-small's attributes: two fewer (its Patient block) where the reading refuses every Patient
# change and the example specs are written without it (readings.spec_for_reading).
CT_ATTRIBUTES = 3 if PATIENT_CHANGES_REFUSED else 5


def rollback_json(project, *args):
    result = project.run("rollback", *args, "--json")
    doc = check_report(result.json) if result.stdout.strip().startswith("{") else None
    return result, doc


def test_rollback_round_trip(project, applied):
    ct = applied["ct-small"]
    original = strip_generated(project.metadata(ct, 1))
    serial = project.state()["serial"]

    result, doc = rollback_json(project, "ct-small", "--auto-approve")
    assert result.exit_code == 0, result.stderr
    assert doc["operation"] == "rollback"
    [item] = doc["image_sets"]
    assert (item["spec"], item["image_set_id"], item["status"], item["version_before"],
            item["version_after"], item["writes"]) == ("ct-small", ct, "applied", "2", "3", 1)
    assert item["response"]["imageSetWorkflowStatus"] == "UPDATED"
    # A new version whose content is the version before our apply.
    versions = project.versions(ct)
    assert [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in versions] \
        == [("1", "IMPORTED"), ("2", "UPDATED"), ("3", "UPDATED")]
    assert strip_generated(project.metadata(ct)) == original
    assert project.metadata(ct)["Patient"]["DICOM"]["PatientName"] == "CompressedSamples^CT1"
    # Recorded, and nothing else touched.
    record = project.record("ct-small", ct)
    assert (record["last_operation"], record["version_before"], record["version_after"]) \
        == ("rollback", "2", "3")
    assert project.state()["serial"] == serial + 1
    project.check_state_schema()
    assert project.version_count(applied["nm-bone"]) == project.version_count(
        applied["sc-deid"]) == 2

    # drift: what is live is what the state recorded last: in sync.
    drift = project.run("drift", "--json")
    assert drift.exit_code == 0, drift.stdout
    assert {i["status"] for i in drift.json["image_sets"]} == {"in-sync"}
    # plan: the spec wants its change again.
    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2
    if READING.behaviour("seed_primary") == "true":       # a primary seed: a study update
        assert ("Plan: 1 image set to update in 1 request (1 study update), 2 unchanged, "
                f"{CT_ATTRIBUTES} attributes changed.") in plan.stdout
        assert f"ct-small: image set {ct} (version 3): leader, the request is sent here" \
            in plan.stdout
    else:                                                  # seed_primary=false: per image set
        assert (f"Plan: 1 image set to update, 2 unchanged, {CT_ATTRIBUTES} attributes "
                "changed.") in plan.stdout
        assert f"# ct-small: image set {ct} (" in plan.stdout
    # and apply makes it again, recording the rollback version as the one before.
    again = project.run("apply", "--auto-approve")
    assert again.exit_code == 0
    record = project.record("ct-small", ct)
    assert (record["last_operation"], record["version_before"], record["version_after"]) \
        == ("apply", "3", "4")


def test_rollback_to_a_chosen_version(project, applied):
    ct = applied["ct-small"]
    # A second apply of an edited spec: version 3.
    path = project.specs_dir / "ct-small.yaml"
    path.write_text(path.read_text().replace("CT CHEST", "CT ABDOMEN"))
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert project.metadata(ct)["Study"]["DICOM"]["StudyDescription"] == "CT ABDOMEN"
    assert project.record("ct-small", ct)["version_before"] == "2"

    result, doc = rollback_json(project, "ct-small", "--to-version", "2", "--auto-approve")
    assert result.exit_code == 0, result.stderr
    assert doc["image_sets"][0]["version_after"] == "4"
    assert strip_generated(project.metadata(ct)) == strip_generated(project.metadata(ct, 2))
    assert project.metadata(ct)["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"
    # The live values are what the state now holds: drift is in sync...
    assert project.run("drift").exit_code == 0
    # ...and the current spec (CT ABDOMEN) differs again.
    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2 and "1 attribute changed" in plan.stdout


def test_rollback_refuses_without_a_terminal(project, applied):
    ct = applied["ct-small"]
    state = project.state()
    result = project.run("rollback", "ct-small", input="yes\n")
    assert result.exit_code == 1
    assert f"image set {ct}: revert to version 1" in result.stdout
    assert "refusing to apply without a terminal" in result.stderr
    assert project.version_count(ct) == 2
    assert project.state() == state


def test_rollback_of_an_unknown_spec(project, applied):
    result = project.run("rollback", "no-such-spec", "--auto-approve")
    assert result.exit_code == 1
    assert "no image set of spec no-such-spec is recorded in the state" in result.stderr


def test_rollback_to_a_version_that_does_not_exist_fails_clearly(project, applied):
    ct = applied["ct-small"]
    state = project.state()
    result, doc = rollback_json(project, "ct-small", "--to-version", "42", "--auto-approve")
    assert result.exit_code == 1
    item = doc["image_sets"][0]
    # The image set is there; the version is not: a failure, not a missing image set.
    assert item["status"] == "failed"
    assert "42" in item["reason"]
    assert project.version_count(ct) == 2
    assert project.state() == state


def test_rollback_keeps_other_writers_changes_made_before_our_apply(project, ids):
    """Our apply went on top of someone's change: rolling it back undoes ours only."""
    plan = project.run("plan", "--out", "plan.json")
    assert plan.exit_code == 0
    ct = ids["ct-small"]
    project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDate": "20240105"}}})
    assert project.run("apply", "plan.json").exit_code == 0
    assert project.version_count(ct) == 3
    result, doc = rollback_json(project, "ct-small", "--auto-approve")
    assert result.exit_code == 0
    live = project.metadata(ct)
    assert live["Study"]["DICOM"]["StudyDate"] == "20240105"             # theirs: kept
    assert CT_MANAGED.of(live) == CT_MANAGED.of(project.metadata(ct, 1))      # ours: undone
    assert strip_generated(live) == strip_generated(project.metadata(ct, 2))


def test_rollback_of_a_deleted_image_set_is_missing(project, applied):
    project.delete(applied["nm-bone"])
    result, doc = rollback_json(project, "nm-bone", "--auto-approve")
    assert result.exit_code == 1
    assert doc["image_sets"][0]["status"] == "missing"


def test_rollback_image_set_option_limits_it(project, ids):
    nm, sc = ids["nm-bone"], ids["sc-deid"]
    for spec in ("ct-small.yaml", "nm-bone.yaml", "sc-deid.yaml"):
        (project.specs_dir / spec).unlink()
    project.write_spec("first", {"Study": {"StudyDescription": "FIRST"}}, image_set_id=nm)
    project.write_spec("second", {"Study": {"StudyDescription": "SECOND"}}, image_set_id=sc)
    assert project.run("apply", "--auto-approve").exit_code == 0
    result, doc = rollback_json(project, "first", "--image-set-id", sc, "--auto-approve")
    assert result.exit_code == 1                      # sc is not an image set of "first"
    assert project.version_count(nm) == project.version_count(sc) == 2
    result, doc = rollback_json(project, "first", "--image-set-id", nm, "--auto-approve")
    assert result.exit_code == 0
    assert project.version_count(nm) == 3 and project.version_count(sc) == 2


def test_pending_records_a_killed_apply_left(project, ids):
    """A pending record (saved before a write, the run killed before its outcome): rollback
    of one whose write never landed writes nothing; drift says it was not applied; apply
    resolves it into an ordinary record that remembers the version before."""
    from reconciler.spec.config import load_config
    from reconciler.spec.loader import load_specs
    from reconciler.engine.diff import desired_values
    from reconciler.engine.operations import GroupCommit
    from reconciler.states import ImageSetRecord, State, open_backend

    config = load_config(str(project.config_path))
    [spec] = [s for s in load_specs([], config) if s.name == "ct-small"]
    backend = open_backend(config.state, config.root)
    state = State.new()
    ct = ids["ct-small"]
    state.put("ct-small", ImageSetRecord(project.datastore_id, ct, version_before="1",
                                         version_after=None,
                                         spec_digest=state.spec_digest(spec.digest),
                                         hashes=state.hash_values(desired_values(spec.attributes),
                                                                  ct)))
    GroupCommit(state, backend).save()
    listed = project.run("state", "list")
    assert "pending write on version 1" in listed.stdout

    drift = project.run("drift", "--json")
    [item] = [i for i in drift.json["image_sets"] if i["image_set_id"] == ct]
    assert item["status"] == "not-applied" and "interrupted" in item["reason"]

    result, doc = rollback_json(project, "ct-small", "--auto-approve")
    assert result.exit_code == 0, result.stderr
    assert [i["status"] for i in doc["image_sets"]] == ["unchanged"]
    assert project.version_count(ct) == 1                     # nothing written

    applied = project.run("apply", "--auto-approve")
    assert applied.exit_code == 0, applied.stderr
    record = project.record("ct-small", ct)
    assert (record["version_before"], record["version_after"]) == ("1", "2")
