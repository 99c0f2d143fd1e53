"""A search index that lags completed versions (the emulator's ``search_index_lag=5``) on a
clock of the emulator's own, moved forward by the tests instead of waiting: a plan that leads
to writes never takes "nothing changed" from a listing; a plain plan and drift say how many
image sets they judged from the listing, and ``--read-all`` reads them; a plan made right
after our own apply or rollback (the spec edited since or not) diffs against the version the
state recorded, not the older one the index still lists."""

from __future__ import annotations

import json

import jsonschema
import pytest
from index_clock import Clock
from apply_support import EXAMPLES_DICOM, REPO_ROOT, check_report
from plan_files import read_plan

from reconciler.emulator.server import ThreadedEmulator

DRIFT_SCHEMA = json.loads((REPO_ROOT / "schemas" / "drift.v1.schema.json").read_text())
PLAN_SCHEMA = json.loads((REPO_ROOT / "schemas" / "plan.v1.schema.json").read_text())
LAG = 5.0
CT = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def emu(clock):
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02, clock=clock,
                          behaviours={"search_index_lag": LAG,
                                      "seed_primary": "false"}) as emulator:
        clock.advance(2 * LAG)        # the index shows the seeded image sets
        yield emulator


@pytest.fixture
def settled(project, clock):
    """The example specs applied, and the search index caught up with our versions; then a
    second writer changes a managed value of ct-small: the index does not show it yet."""
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.stdout + result.stderr
    clock.advance(2 * LAG)
    ct = project.image_set_of(CT)
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "SMITH^JOHN"}}})
    listed = project.client.search_image_sets(datastoreId=project.datastore_id,
                                              searchCriteria={})["imageSetsMetadataSummaries"]
    assert {s["imageSetId"]: s["version"] for s in listed}[ct] == 2     # the index lags
    return ct


def test_reapply_right_after_an_out_of_band_edit_writes_the_fix(project, settled):
    result = project.run("apply", "--auto-approve", "--json")
    assert result.exit_code == 0, result.stdout
    items = {i["spec"]: i for i in check_report(result.json)["image_sets"]}
    assert items["ct-small"]["status"] == "applied" and items["ct-small"]["writes"] == 1
    assert (items["ct-small"]["version_before"], items["ct-small"]["version_after"]) == ("3", "4")
    assert project.metadata(settled)["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"
    assert {items[n]["status"] for n in ("nm-bone", "sc-deid")} == {"unchanged"}


def test_saved_plan_does_not_skip_and_applies(project, settled):
    result = project.run("plan", "--out", "plan.json", "--json")
    assert result.exit_code == 0, result.stderr
    doc = read_plan(project.root / "plan.json")
    assert "not_reread" not in doc
    [entry] = [e for e in doc["image_sets"] if e["action"] == "update"]
    assert (entry["spec"], entry["version_id"]) == ("ct-small", "3")
    applied = project.run("apply", "plan.json", "--json")
    assert applied.exit_code == 0, applied.stdout
    assert project.metadata(settled)["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"


def test_plain_plan_says_what_it_did_not_read(project, settled):
    doc = project.run("plan", "--json").json
    jsonschema.Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert doc["not_reread"]["count"] == 3
    assert "may lag" in doc["not_reread"]["note"]
    text = project.run("plan").stdout
    assert "Note: 3 image sets not re-read" in text and "plan --read-all" in text
    markdown = project.run("plan", "--format", "markdown").stdout
    assert "> 3 image sets not re-read" in markdown
    full = project.run("plan", "--read-all", "--json").json
    assert "not_reread" not in full and full["summary"]["update"] == 1


def test_drift_says_what_it_judged_from_the_listing_and_read_all_finds_it(project, settled):
    plain = project.run("drift")
    assert plain.exit_code == 0                       # the listing still shows our version
    assert "judged in sync from the SearchImageSets listing" in plain.stdout
    assert "drift --read-all" in plain.stdout
    markdown = project.run("drift", "--format", "markdown").stdout
    assert "judged in sync from the SearchImageSets listing" in markdown

    result = project.run("drift", "--read-all", "--json")
    assert result.exit_code == 2, result.stdout
    doc = result.json
    jsonschema.Draft202012Validator(DRIFT_SCHEMA).validate(doc)
    items = {i["spec"]: i for i in doc["image_sets"]}
    assert items["ct-small"]["status"] == "drifted"
    assert items["ct-small"]["live_version"] == "3"
    assert doc["check"]["from_listing"] == 0 and doc["check"]["index_lag"] is None


@pytest.fixture
def just_applied(project):
    """The example specs applied (version 2 each); the index still lists the seeded version 1."""
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.stdout + result.stderr
    ct = project.image_set_of(CT)
    listed = project.client.search_image_sets(datastoreId=project.datastore_id,
                                              searchCriteria={})["imageSetsMetadataSummaries"]
    assert {s["imageSetId"]: s["version"] for s in listed}[ct] == 1     # the index lags
    return ct


def test_a_spec_edited_right_after_its_apply_is_planned_on_the_version_the_state_recorded(
        project, just_applied):
    """The edited spec's digest is not the one the state verified, but the state still says
    version 2 exists: the listing's version 1 is not the one to diff against (it would show
    every change of the first apply again, and a saved plan of it would be stale)."""
    spec = project.specs_dir / "ct-small.yaml"
    spec.write_text(spec.read_text().replace("CT CHEST", "CT THORAX"))
    result = project.run("plan", "--out", "plan.json", "--json")
    assert result.exit_code == 0, result.stderr
    doc = read_plan(project.root / "plan.json")
    [entry] = [e for e in doc["image_sets"] if e["action"] == "update"]
    assert (entry["spec"], entry["version_id"]) == ("ct-small", "2")
    assert [(c["key"], c["after"]) for c in entry["changes"]] == [("StudyDescription",
                                                                   "CT THORAX")]
    applied = project.run("apply", "plan.json", "--json")
    assert applied.exit_code == 0, applied.stdout
    items = {i["spec"]: i for i in check_report(applied.json)["image_sets"]}
    assert (items["ct-small"]["status"], items["ct-small"]["version_before"]) == ("applied", "2")
    assert project.metadata(just_applied)["Study"]["DICOM"]["StudyDescription"] == "CT THORAX"


def test_a_labels_only_edit_right_after_an_apply_plans_no_changes(project, just_applied):
    """Labels are part of the spec digest, not of the metadata: nothing to change."""
    spec = project.specs_dir / "ct-small.yaml"
    spec.write_text(spec.read_text().replace("team: radiology", "team: imaging"))
    result = project.run("plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.stdout
    assert "Plan: 0 image sets to update, 3 unchanged, 0 attributes changed." in result.stdout


def test_a_plan_right_after_a_rollback_is_made_on_the_rollback_version(project, just_applied):
    result = project.run("rollback", "ct-small", "--auto-approve")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = project.run("plan", "--json").json
    [entry] = [e for e in doc["image_sets"] if e["action"] == "update"]
    assert (entry["spec"], entry["version_id"]) == ("ct-small", "3")
