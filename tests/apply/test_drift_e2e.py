"""drift through the command line: in-sync without reading any metadata, drifted (changed
out of band with boto3 and with the AWS CLI), changed elsewhere, missing, not applied,
ignore rules, redaction, the JSON report and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from apply_support import (CT_MANAGED, INDEX_LAG, PATIENT_CHANGES_REFUSED, REPO_ROOT,
                           SCHEMA_VERSION, Element, dicom_update, spec_attributes)

DRIFT_SCHEMA = json.loads((REPO_ROOT / "schemas" / "drift.v1.schema.json").read_text())
AWS_CLI = Path(sys.executable).with_name("aws")


def drift_json(project, *args, ci=False):
    result = project.run("drift", "--json", *args, ci=ci)
    doc = result.json
    jsonschema.Draft202012Validator(DRIFT_SCHEMA).validate(doc)
    return result.exit_code, doc, {i["spec"]: i for i in doc["image_sets"]}


def counters(project):
    """Fault rules that do nothing but count the calls they match."""
    faults = project.emu.faults
    return {op: faults.add(op, "latency", seconds=0)
            for op in ("GetImageSet", "GetImageSetMetadata", "SearchImageSets")}


def test_in_sync_without_reading_metadata(project, applied):
    count = counters(project)
    code, doc, items = drift_json(project)
    assert code == 0
    assert doc["summary"] == {"in-sync": 3, "drifted": 0, "changed-elsewhere": 0, "missing": 0,
                              "not-applied": 0}
    for name, image_set_id in applied.items():
        item = items[name]
        assert (item["status"], item["image_set_id"], item["recorded_version"],
                item["live_version"], item["attributes"]) \
            == ("in-sync", image_set_id, "2", "2", [])
    # One page of SearchImageSets lists all three at the versions our apply made: no
    # GetImageSet, and not one metadata read. (Under a lagging index, right after the apply,
    # the listing still shows version 1: each is confirmed with one GetImageSet instead.)
    assert count["SearchImageSets"].fired == 1
    assert count["GetImageSet"].fired == (3 if INDEX_LAG else 0)
    assert count["GetImageSetMetadata"].fired == 0
    text = project.run("drift")
    assert text.exit_code == 0
    assert "Drift: 0 drifted, 0 missing, 0 changed elsewhere, 3 in sync, 0 not applied." \
        in text.stdout


def test_drifted_attribute_named_and_value_redacted_by_the_rules(project, applied):
    ct = applied["ct-small"]
    project.write_oob(ct, updatable=dicom_update((CT_MANAGED, "INTRUDER^EVE")))
    count = counters(project)

    code, doc, items = drift_json(project)                    # CI unset: values shown
    assert code == 2
    item = items["ct-small"]
    assert (item["status"], item["recorded_version"], item["live_version"]) == ("drifted", "2", "3")
    assert item["attributes"] == [{"path": CT_MANAGED.path, "live": "INTRUDER^EVE",
                                   "ignored": False}]
    assert doc["redacted"] is False
    assert {items[n]["status"] for n in ("nm-bone", "sc-deid")} == {"in-sync"}
    assert count["GetImageSetMetadata"].fired == 1           # only the image set that moved

    for args, ci in ((["--redact"], False), ([], True)):
        code, doc, items = drift_json(project, *args, ci=ci)
        assert code == 2 and doc["redacted"] is True
        live = items["ct-small"]["attributes"][0]["live"]
        assert live.startswith(f"<redacted {CT_MANAGED.vr} len=12 sha256:")
        assert "INTRUDER" not in json.dumps(doc)
    code, doc, items = drift_json(project, "--no-redact", ci=True)
    assert items["ct-small"]["attributes"][0]["live"] == "INTRUDER^EVE"

    text = project.run("drift", ci=True)
    assert text.exit_code == 2
    assert f"drifted           ct-small: image set {ct}" in text.stdout
    assert f"drifted: {CT_MANAGED.path} is now <redacted {CT_MANAGED.vr} len=12" in text.stdout
    assert "INTRUDER" not in text.stdout + text.stderr


def test_drift_made_with_the_aws_cli(project, applied):
    """The out-of-band change made the way a person would: the AWS CLI against the emulator."""
    sc = applied["sc-deid"]
    env = dict(os.environ, AWS_DISABLE_HOST_PREFIX_INJECTION="true")
    updates = {"DICOMUpdates": {"updatableAttributes": json.dumps(
        {"SchemaVersion": SCHEMA_VERSION, "Study": {"DICOM": {"ReferringPhysicianName": "Moriarty^James"}}})}}
    done = subprocess.run(
        [str(AWS_CLI), "medical-imaging", "update-image-set-metadata", "--endpoint-url",
         project.url, "--datastore-id", project.datastore_id, "--image-set-id", sc,
         "--latest-version-id", "2", "--update-image-set-metadata-updates", json.dumps(updates),
         # on a primary image set a Study change goes study-wide, as it must where the
         # service restricts the Study level (primary_restricted_levels=patient_study)
         *(["--include-study-image-sets"] if project.latest(sc)["isPrimary"] else [])],
        env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert project.wait_unlocked(sc)["imageSetWorkflowStatus"] == "UPDATED"
    code, doc, items = drift_json(project)
    assert code == 2
    # The spec says "must be absent": it is back.
    assert items["sc-deid"]["attributes"] == [{"path": "Study.ReferringPhysicianName",
                                               "live": "Moriarty^James", "ignored": False}]


def test_changed_elsewhere_when_only_unmanaged_attributes_moved(project, applied):
    nm = applied["nm-bone"]
    project.write_oob(nm, updatable={"Study": {"DICOM": {"StudyDate": "20240105"}}})
    # A managed attribute changed and changed back is not drift either: the values are ours.
    ct = applied["ct-small"]
    project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDescription": "OTHER"}}})
    project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDescription": "CT CHEST"}}})
    code, doc, items = drift_json(project)
    assert code == 0
    assert (items["nm-bone"]["status"], items["nm-bone"]["live_version"]) \
        == ("changed-elsewhere", "3")
    assert items["nm-bone"]["attributes"] == []
    assert (items["ct-small"]["status"], items["ct-small"]["live_version"]) \
        == ("changed-elsewhere", "4")
    assert doc["summary"]["changed-elsewhere"] == 2


def test_missing_when_the_image_set_is_deleted(project, applied):
    project.delete(applied["nm-bone"])
    code, doc, items = drift_json(project)
    assert code == 2
    assert items["nm-bone"]["status"] == "missing"
    assert items["nm-bone"]["image_set_id"] == applied["nm-bone"]
    assert doc["summary"]["missing"] == 1
    text = project.run("drift")
    assert text.exit_code == 2
    assert f"missing           nm-bone: image set {applied['nm-bone']}" in text.stdout


def test_specs_not_applied_are_listed_but_are_not_drift(project, ids):
    assert project.run("apply", str(project.specs_dir / "sc-deid.yaml"),
                       "--auto-approve").exit_code == 0
    code, doc, items = drift_json(project)
    assert code == 0
    assert items["sc-deid"]["status"] == "in-sync"
    assert {items[n]["status"] for n in ("ct-small", "nm-bone")} == {"not-applied"}
    assert doc["summary"]["not-applied"] == 2
    # Drift of only the given specs' records still reads the whole state.
    code, doc, items = drift_json(project, str(project.specs_dir / "sc-deid.yaml"))
    assert set(items) == {"sc-deid"}


def test_no_state_at_all(project, ids):
    code, doc, items = drift_json(project)
    assert code == 0
    assert doc["summary"]["not-applied"] == 3
    assert not project.state_path.exists()                # drift never writes a state


def test_ignore_rules_from_the_config(project, applied):
    project.write_config({**project.config, "ignore": [
        {"spec": "ct-*", "attributes": ["Study.StudyDescription",
                                        "Series[*].Instances[*].ImageComments"],
         "reason": "the reading room edits these"}]})
    ct = applied["ct-small"]
    series = next(iter(project.metadata(ct)["Study"]["Series"]))
    instance = next(iter(project.metadata(ct)["Study"]["Series"][series]["Instances"]))
    project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDescription": "CT CHEST W/O"},
                                               "Series": {series: {"Instances": {instance: {
                                                   "DICOM": {"ImageComments": "re-read"}}}}}}})
    code, doc, items = drift_json(project)
    assert code == 0
    item = items["ct-small"]
    assert item["status"] == "changed-elsewhere"
    assert "2 drifted attribute(s) ignored" in item["reason"]
    assert sorted((a["path"], a["ignored"]) for a in item["attributes"]) == [
        ("Series[%s].Instances[%s].ImageComments" % (series, instance), True),
        ("Study.StudyDescription", True)]
    # An attribute no rule covers still drifts (and the ignored ones are still listed).
    project.write_oob(ct, updatable={"Study": {"DICOM": {"AccessionNumber": "ACC-9999"}}})
    code, doc, items = drift_json(project)
    assert code == 2
    item = items["ct-small"]
    assert item["status"] == "drifted"
    assert {a["path"]: a["ignored"] for a in item["attributes"]} == {
        "Study.AccessionNumber": False, "Study.StudyDescription": True,
        "Series[%s].Instances[%s].ImageComments" % (series, instance): True}
    # The rule names ct-* specs only: the same change on sc-deid's image set is drift (to
    # an element sc-deid manages: its ReferringPhysicianName where the reading refuses
    # Patient changes and sc-deid is written without its Patient block).
    sc = applied["sc-deid"]
    project.write_oob(sc, updatable=dicom_update(
        (Element("Study", "ReferringPhysicianName", "PN"), "LEAK^01") if PATIENT_CHANGES_REFUSED
        else (Element("Patient", "PatientID", "LO"), "LEAK-01")))
    code, doc, items = drift_json(project)
    assert items["sc-deid"]["status"] == "drifted"


def test_drift_then_apply_repairs_it(project, applied):
    ct = applied["ct-small"]
    project.write_oob(ct, updatable=dicom_update((CT_MANAGED, "INTRUDER^EVE")))
    assert project.run("drift").exit_code == 2
    repaired = project.run("apply", "--auto-approve", "--json")
    assert repaired.exit_code == 0
    item = next(i for i in repaired.json["image_sets"] if i["spec"] == "ct-small")
    assert (item["status"], item["version_before"], item["version_after"]) == ("applied", "3", "4")
    code, doc, items = drift_json(project)
    assert code == 0 and items["ct-small"]["status"] == "in-sync"


def test_present_but_empty_and_absent_are_told_apart(project, ids):
    """A spec's "" (present, empty; HealthImaging shows null) is not the spec's null (absent):
    the state's hashes keep the difference, and drift reports the change between them."""
    ct = ids["ct-small"]
    for name in ("ct-small", "nm-bone", "sc-deid"):
        (project.specs_dir / f"{name}.yaml").unlink()
    assert project.metadata(ct)["Study"]["DICOM"]["ReferringPhysicianName"] is None
    # A person name of the spec's (a Study-level one where the reading refuses every Patient
    # change to the primary seed).
    name = (Element("Study", "NameOfPhysiciansReadingStudy", "PN") if PATIENT_CHANGES_REFUSED
            else Element("Patient", "PatientName", "PN"))
    referring = Element("Study", "ReferringPhysicianName", "PN")
    project.write_spec("ct-empty", spec_attributes((referring, ""), (name, "DOE^JANE")),
                       image_set_id=ct)
    applied = project.run("apply", "--auto-approve", "--json")
    assert applied.exit_code == 0, applied.stderr
    assert project.metadata(ct)["Study"]["DICOM"]["ReferringPhysicianName"] is None   # kept
    assert name.of(project.metadata(ct)) == "DOE^JANE"
    # A DICOM-equal rewrite of a value is not drift.
    project.write_oob(ct, updatable=dicom_update((name, "DOE^JANE^^")))
    code, doc, items = drift_json(project)
    assert (code, items["ct-empty"]["status"]) == (0, "changed-elsewhere")
    # Removing the empty element is.
    project.write_oob(ct, removable={"Study": {"DICOM": {"ReferringPhysicianName": None}}})
    assert "ReferringPhysicianName" not in project.metadata(ct)["Study"]["DICOM"]
    code, doc, items = drift_json(project)
    assert code == 2
    assert items["ct-empty"]["attributes"] == [
        {"path": "Study.ReferringPhysicianName", "live": "(absent)", "ignored": False}]


def test_an_untouched_fleet_costs_one_search_call_per_50_image_sets(tmp_path):
    """Drift over 120 recorded image sets that nobody touched: 3 listing pages, no per-image-set
    reads; one touched image set costs one GetImageSet and one metadata read more, once the
    search index shows the change (under search_index_lag, not before the lag has passed: the
    listing still shows the recorded version, and the check says so)."""
    from apply_support import client_for, sample_documents, seed_documents
    from index_clock import Clock, catch_up_index
    from reconciler.engine.drift import detect
    from reconciler.emulator.server import ThreadedEmulator
    from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings
    from reconciler.dicom.redact import Redactor
    from reconciler.states import ImageSetRecord, State

    docs = sample_documents(120)
    clock = Clock()
    with ThreadedEmulator(seeds=seed_documents(tmp_path, docs), clock=clock) as emu:
        hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emu.url))
        state = State.new()
        for image_set_id in emu.image_set_ids:
            state.put("fleet", ImageSetRecord(emu.datastore_id, image_set_id, "1", "1", "0" * 64,
                                              state.hash_values({"Study.StudyDescription": None},
                                                                image_set_id)))
        report = detect(hi, state, [], lambda s, p: False, Redactor(False))
        assert report["summary"]["in-sync"] == 120
        assert hi.calls == {"SearchImageSets": 3}
        touched = emu.image_set_ids[7]
        client = client_for(emu.url)
        client.update_image_set_metadata(
            datastoreId=emu.datastore_id, imageSetId=touched, latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(
                {"SchemaVersion": SCHEMA_VERSION, "Study": {"DICOM": {"StudyDescription": "X"}}})}})
        emu.backend.complete_pending()
        if INDEX_LAG:
            hi.calls.clear()
            report = detect(hi, state, [], lambda s, p: False, Redactor(False))
            assert report["summary"]["in-sync"] == 120 and hi.calls == {"SearchImageSets": 3}
            assert report["check"]["from_listing"] == 120
            catch_up_index(clock)
        hi.calls.clear()
        report = detect(hi, state, [], lambda s, p: False, Redactor(False))
        assert report["summary"]["drifted"] == 1
        assert hi.calls == {"SearchImageSets": 3, "GetImageSet": 1, "GetImageSetMetadata": 1}
