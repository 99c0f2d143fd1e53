"""plan and show end to end: a real `python -m reconciler` subprocess against the emulator,
and the planner's behaviours through the CLI (LOCKED waits, targets, selectors, exit codes)."""

import json

import boto3
import pytest
from botocore.config import Config
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.documents import plans
from reconciler.states.keys import key_source

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


@pytest.fixture
def project(example_project):
    return example_project


@pytest.fixture
def _subprocess(run_reconciler):
    return lambda emulator, project, *args, ci=False: run_reconciler(project, *args, ci=ci)


def _cli(emulator, project, *args):
    return CliRunner().invoke(cli, ["--config", str(project / "reconciler.yaml"), *args],
                              env={"AWS_ENDPOINT_URL_MEDICAL_IMAGING": emulator.url, "CI": None})


def test_plan_out_and_show_through_a_real_subprocess(emulator, project, _subprocess):
    plan = _subprocess(emulator, project, "plan", "--out", "plan.json", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert plan.stdout.splitlines()[-2] == (
        "Plan: 3 image sets to update in 3 requests (3 study updates), 0 unchanged, 10 attributes changed.")
    saved = project / "plan.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    doc = plans.load(saved, key_source(None))
    assert {e["spec"] for e in plans.per_image_set(doc)} == {"ct-small", "nm-bone", "sc-deid"}
    assert all(e["version_id"] == "1" and len(e["requests"]) == 1 for e in plans.per_image_set(doc))
    show = _subprocess(emulator, project, "show", "plan.json")
    assert show.returncode == 0
    assert show.stdout == plan.stdout.replace(
        "Saved the plan to plan.json. Apply exactly it with: reconciler apply plan.json\n", "")
    # nothing was written by plan: every image set is still at version 1
    client = boto3.client("medical-imaging", endpoint_url=emulator.url,
                          config=Config(inject_host_prefix=False))
    for image_set_id in emulator.image_set_ids:
        versions = client.list_image_set_versions(datastoreId=emulator.datastore_id,
                                                  imageSetId=image_set_id)
        assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["1"]


def test_ci_redacts_plan_output_and_json_has_no_payloads(emulator, project, _subprocess):
    text = _subprocess(emulator, project, "plan", ci=True)
    assert text.returncode == 0
    assert "DOE^JANE" not in text.stdout and "CompressedSamples" not in text.stdout
    assert "<redacted PN len=8 sha256:" in text.stdout
    as_json = _subprocess(emulator, project, "plan", "--json", ci=True)
    doc = json.loads(as_json.stdout)
    assert "DOE^JANE" not in as_json.stdout
    assert not plans.is_applicable(doc)
    shown = _subprocess(emulator, project, "--no-redact", "plan")
    assert "DOE^JANE" in shown.stdout


def _lock_ct_with_an_update(emulator):
    """Start an update of the CT image set that stays LOCKED for three polls."""
    client = boto3.client("medical-imaging", endpoint_url=emulator.url,
                          config=Config(inject_host_prefix=False))
    [ct] = client.search_image_sets(datastoreId=emulator.datastore_id, searchCriteria={
        "filters": [{"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": CT_STUDY}]}]}
    )["imageSetsMetadataSummaries"]
    emulator.faults.add("UpdateImageSetMetadata", "lock", imageSetId=ct["imageSetId"], polls=3,
                        times=1)
    client.update_image_set_metadata(
        datastoreId=emulator.datastore_id, imageSetId=ct["imageSetId"], latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(
            {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "LOCKED ONE"}}})}})
    return ct["imageSetId"]


def test_a_locked_image_set_is_waited_for_then_planned_on_its_new_version(emulator, project):
    image_set_id = _lock_ct_with_an_update(emulator)
    # the same corrections, aimed at the image set by its id: plan reads GetImageSet first
    spec = (project / "specs" / "ct-small.yaml").read_text()
    (project / "specs" / "ct-by-id.yaml").write_text(
        spec.replace("name: ct-small", "name: ct-by-id").replace(
            f"selector:\n    DICOMStudyInstanceUID: {CT_STUDY}", f"imageSetId: {image_set_id}"))
    result = _cli(emulator, project, "plan", "--target", "ct-by-id", "--json", "--no-redact")
    assert result.exit_code == 0, result.output
    [entry] = plans.per_image_set(json.loads(result.stdout))
    assert entry["version_id"] == "2"      # waited for the update, planned against it
    before = {c["key"]: c["before"] for c in entry["changes"]}
    assert before["StudyDescription"] == "LOCKED ONE"


def test_a_selector_target_is_planned_on_the_listed_version_and_apply_refuses_it_stale(
        emulator, project):
    """Selector targets are read at the version the search listed (one call fewer). An
    update in flight is not visible there; the saved plan then names the old version, and
    apply writes nothing unreviewed: latestVersionId no longer matches and the re-diff differs."""
    _lock_ct_with_an_update(emulator)
    saved = str(project / "plan.json")
    planned = _cli(emulator, project, "plan", "--target", "ct-small", "--out", saved,
                   "--no-redact")
    assert planned.exit_code == 0, planned.output
    [entry] = plans.per_image_set(plans.load(project / "plan.json", key_source(None)))
    assert entry["version_id"] == "1"
    emulator.backend.complete_pending()
    applied = _cli(emulator, project, "apply", saved, "--json")
    report = json.loads(applied.stdout)
    assert [i["status"] for i in report["image_sets"]] == ["stale"], applied.output
    assert applied.exit_code != 0
    client = boto3.client("medical-imaging", endpoint_url=emulator.url,
                          config=Config(inject_host_prefix=False))
    versions = client.list_image_set_versions(datastoreId=emulator.datastore_id,
                                              imageSetId=entry["image_set_id"])
    assert len(versions["imageSetPropertiesList"]) == 2   # the other writer's, none of ours


def test_target_exclude_and_selectors(emulator, project):
    only = _cli(emulator, project, "plan", "--target", "nm-*", "--json")
    assert [e["spec"] for e in plans.per_image_set(json.loads(only.stdout))] == ["nm-bone"]
    rest = _cli(emulator, project, "plan", "--exclude", "nm-*", "--json")
    assert sorted(e["spec"] for e in plans.per_image_set(json.loads(rest.stdout))) == ["ct-small",
                                                                               "sc-deid"]
    none = _cli(emulator, project, "plan", "--target", "nothing-*")
    assert none.exit_code == 1 and "--target matched no spec" in none.output
    (project / "specs" / "empty.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: ImageSetMetadata\nmetadata: {name: empty}\n"
        "target:\n  selector: {DICOMPatientId: NOBODY}\n"
        "attributes:\n  Study: {StudyDescription: X}\n")
    empty = _cli(emulator, project, "plan")
    assert empty.exit_code == 1
    assert "the selector matched no image set" in empty.output


def test_usage_errors_exit_1_and_not_2(emulator, project):
    assert _cli(emulator, project, "plan", "--parallelism", "0").exit_code == 1
    assert _cli(emulator, project, "plan", "--no-such-option").exit_code == 1
    assert _cli(emulator, project, "show").exit_code == 1
