"""The asynchronous lifecycles: update, copy, delete, data stores; versions and concurrency."""

from __future__ import annotations

import json

import pytest
from emulator_support import CT_STUDY, MR_STUDY, OT_STUDY


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


DESCRIPTION = {"Study": {"DICOM": {"StudyDescription": "NEW"}}}


def test_update_stays_locked_for_the_delay_under_a_fake_clock(make_api):
    clock = FakeClock()
    api = make_api(update_delay=2.0, time_scale=4.0, clock=clock)   # 0.5 s of fake time
    image_set = api.image_set(CT_STUDY)
    response = api.update(image_set, DESCRIPTION)
    assert response["imageSetState"] == "LOCKED"
    clock.now += 0.49
    assert api.get(image_set)["imageSetState"] == "LOCKED"
    assert api.get(image_set, "1")["imageSetState"] == "ACTIVE"    # older versions stay readable
    clock.now += 0.01
    done = api.get(image_set)
    assert (done["imageSetState"], done["imageSetWorkflowStatus"]) == ("ACTIVE", "UPDATED")
    # The completion time is the due time, not the moment somebody looked.
    assert done["updatedAt"].timestamp() == pytest.approx(1_700_000_000.5, abs=0.002)


def test_zero_delay_completes_on_the_next_call(make_api):
    api = make_api(update_delay=0)
    image_set = api.image_set(CT_STUDY)
    assert api.update(image_set, DESCRIPTION)["imageSetState"] == "LOCKED"
    assert api.get(image_set)["imageSetWorkflowStatus"] == "UPDATED"


def test_writes_while_locked_and_stale_versions_conflict(make_api):
    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock)
    image_set = api.image_set(CT_STUDY)
    api.update(image_set, DESCRIPTION)
    with pytest.raises(api.exceptions.ConflictException, match="locked"):
        api.update(image_set, DESCRIPTION, latest="2")
    with pytest.raises(api.exceptions.ConflictException):
        api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    clock.now += 1
    with pytest.raises(api.exceptions.ConflictException, match="not the latest"):
        api.update(image_set, DESCRIPTION, latest="1")
    assert api.update(image_set, DESCRIPTION, latest="2")["latestVersionId"] == "3"


def test_error_classes_are_behaviours(make_api):
    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock, behaviours={
        "stale_version_error": "validation", "locked_write_error": "validation"})
    image_set = api.image_set(CT_STUDY)
    api.update(image_set, DESCRIPTION)
    with pytest.raises(api.exceptions.ValidationException, match="locked"):
        api.update(image_set, DESCRIPTION, latest="2")
    clock.now += 1
    with pytest.raises(api.exceptions.ValidationException, match="not the latest"):
        api.update(image_set, DESCRIPTION, latest="1")


@pytest.mark.parametrize("mode", ["previous", "pending", "conflict"])
def test_reading_metadata_of_a_locked_version(make_api, mode):
    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock, behaviours={"locked_metadata_read": mode})
    image_set = api.image_set(CT_STUDY)
    old = api.meta(image_set)["Study"]["DICOM"]["StudyDescription"]
    api.update(image_set, DESCRIPTION)
    if mode == "conflict":
        with pytest.raises(api.exceptions.ConflictException):
            api.meta(image_set)
    else:
        expected = old if mode == "previous" else "NEW"
        assert api.meta(image_set)["Study"]["DICOM"]["StudyDescription"] == expected
        assert api.meta(image_set, "2")["Study"]["DICOM"]["StudyDescription"] == expected
    clock.now += 1
    assert api.meta(image_set)["Study"]["DICOM"]["StudyDescription"] == "NEW"


def test_failed_update_consumes_a_version(api):
    image_set = api.image_set(CT_STUDY)
    api.apply(image_set, {"Study": {"DICOM": {"StudyID": "X"}}})         # needs force
    assert api.get(image_set)["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert api.apply(image_set, DESCRIPTION, latest="2")["versionId"] == "3"
    statuses = [(v["versionId"], v["ImageSetWorkflowStatus"])
                for v in api.client.list_image_set_versions(
                    datastoreId=api.ds, imageSetId=image_set)["imageSetPropertiesList"]]
    assert statuses == [("3", "UPDATED"), ("2", "UPDATE_FAILED"), ("1", "IMPORTED")]


def test_list_versions_paginates_over_more_than_50(make_api):
    api = make_api(update_delay=0)
    image_set = api.image_set(MR_STUDY)
    for n in range(1, 56):
        api.update(image_set, {"Study": {"DICOM": {"StudyDescription": f"v{n + 1}"}}},
                   latest=str(n))
    with pytest.raises(api.exceptions.ValidationException):
        api.client.list_image_set_versions(datastoreId=api.ds, imageSetId=image_set,
                                           maxResults=51)
    first = api.client.list_image_set_versions(datastoreId=api.ds, imageSetId=image_set)
    assert len(first["imageSetPropertiesList"]) == 50 and first["nextToken"]
    pages = api.client.get_paginator("list_image_set_versions").paginate(
        datastoreId=api.ds, imageSetId=image_set, PaginationConfig={"PageSize": 20})
    ids = [v["versionId"] for page in pages for v in page["imageSetPropertiesList"]]
    assert ids == [str(n) for n in range(56, 0, -1)]
    assert api.meta(image_set, "30")["Study"]["DICOM"]["StudyDescription"] == "v30"


def test_versions_order_asc(make_api):
    api = make_api(behaviours={"versions_order": "asc"})
    image_set = api.image_set(CT_STUDY)
    api.apply(image_set, DESCRIPTION)
    listed = api.client.list_image_set_versions(datastoreId=api.ds, imageSetId=image_set)
    assert [v["versionId"] for v in listed["imageSetPropertiesList"]] == ["1", "2"]


# ------------------------------------------------------------------------------ copy
def test_copy_into_a_new_image_set(make_api):
    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock)
    source = api.image_set(CT_STUDY)
    response = api.client.copy_image_set(
        datastoreId=api.ds, sourceImageSetId=source,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}})
    src, dst = response["sourceImageSetProperties"], response["destinationImageSetProperties"]
    assert (src["imageSetState"], src["imageSetWorkflowStatus"]) == (
        "LOCKED", "COPYING_WITH_READ_ONLY_ACCESS")
    assert (dst["latestVersionId"], dst["imageSetState"], dst["imageSetWorkflowStatus"]) == (
        "1", "LOCKED", "COPYING")
    assert dst["imageSetId"] != source
    with pytest.raises(api.exceptions.ConflictException):
        api.update(source, DESCRIPTION, latest="1")
    listed = {s["imageSetId"] for s in
              api.client.search_image_sets(datastoreId=api.ds)["imageSetsMetadataSummaries"]}
    assert source in listed and dst["imageSetId"] not in listed     # the copy is not done yet
    assert api.meta(source) == api.meta(source, "1")               # the source stays readable
    clock.now += 1
    copied = api.get(dst["imageSetId"])
    assert (copied["imageSetState"], copied["imageSetWorkflowStatus"]) == ("ACTIVE", "COPIED")
    assert copied["isPrimary"] is False
    assert api.get(source)["imageSetWorkflowStatus"] == "IMPORTED"
    doc, original = api.meta(dst["imageSetId"]), api.meta(source)
    assert doc["ImageSetID"] == dst["imageSetId"]
    assert doc["Study"] == original["Study"] and doc["Patient"] == original["Patient"]


def test_copy_subset_into_an_existing_image_set(api):
    source = api.image_set(OT_STUDY)
    doc = api.meta(source)
    suid, series = next(iter(doc["Study"]["Series"].items()))
    keep = sorted(series["Instances"])[:1]
    subset = json.dumps({"SchemaVersion": 1.1, "Study": {"Series": {suid: {
        "Instances": {sop: {} for sop in keep}}}}})
    new = api.client.copy_image_set(
        datastoreId=api.ds, sourceImageSetId=source,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1",
                                                    "DICOMCopies": {"copiableAttributes": subset}}})
    dest = new["destinationImageSetProperties"]["imageSetId"]
    assert api.wait(dest)["isPrimary"] is False
    assert list(api.meta(dest)["Study"]["Series"][suid]["Instances"]) == keep
    api.wait(source)
    # Copy the rest into that destination: a new destination version with all instances.
    response = api.client.copy_image_set(
        datastoreId=api.ds, sourceImageSetId=source,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"},
                                 "destinationImageSet": {"imageSetId": dest,
                                                         "latestVersionId": "1"}})
    assert response["destinationImageSetProperties"]["latestVersionId"] == "2"
    assert api.wait(dest)["imageSetWorkflowStatus"] == "COPIED"
    assert sorted(api.meta(dest)["Study"]["Series"][suid]["Instances"]) == sorted(
        series["Instances"])


def test_copy_with_mismatching_study_fails_without_force(api):
    source, dest = api.image_set(OT_STUDY), api.image_set(CT_STUDY)
    before = api.meta(dest)
    info = {"sourceImageSet": {"latestVersionId": "1"},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": "1"}}
    api.client.copy_image_set(datastoreId=api.ds, sourceImageSetId=source,
                              copyImageSetInformation=info)
    final = api.wait(dest)
    assert (final["versionId"], final["imageSetWorkflowStatus"]) == ("2", "COPY_FAILED")
    assert "don't match" in final["message"]
    assert api.meta(dest) == before
    api.wait(source)
    info["destinationImageSet"]["latestVersionId"] = "2"
    api.client.copy_image_set(datastoreId=api.ds, sourceImageSetId=source, force=True,
                              copyImageSetInformation=info)
    final = api.wait(dest)
    assert final["imageSetWorkflowStatus"] == "COPIED" and final["overrides"] == {"forced": True}
    assert len(api.meta(dest)["Study"]["Series"]) == 2


def test_copy_checks_versions(api):
    source = api.image_set(CT_STUDY)
    with pytest.raises(api.exceptions.ConflictException):
        api.client.copy_image_set(datastoreId=api.ds, sourceImageSetId=source,
                                  copyImageSetInformation={"sourceImageSet":
                                                           {"latestVersionId": "5"}})


# ---------------------------------------------------------------------------- delete
def test_delete_lifecycle(make_api):
    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock, behaviours={"delete_deleted": "conflict"})
    image_set = api.image_set(CT_STUDY)
    response = api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    assert (response["imageSetState"], response["imageSetWorkflowStatus"]) == (
        "LOCKED", "DELETING")
    clock.now += 1
    gone = api.get(image_set)
    assert (gone["imageSetState"], gone["imageSetWorkflowStatus"]) == ("DELETED", "DELETED")
    assert gone["deletedAt"].timestamp() == pytest.approx(clock.now, abs=0.002)
    with pytest.raises(api.exceptions.ConflictException):
        api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    with pytest.raises(api.exceptions.ConflictException):
        api.update(image_set, DESCRIPTION, latest="1")
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.meta(image_set)
    found = api.client.search_image_sets(datastoreId=api.ds)["imageSetsMetadataSummaries"]
    assert image_set not in {s["imageSetId"] for s in found} and len(found) == 4


def test_delete_deleted_ok_behaviour(make_api):
    api = make_api(behaviours={"delete_deleted": "ok"})
    image_set = api.image_set(CT_STUDY)
    api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    again = api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    assert again["imageSetState"] == "DELETED"


# ------------------------------------------------------------------------ data stores
def test_datastore_lifecycle(make_api):
    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock, behaviours={"datastore_create_delay": 2})
    created = api.client.create_datastore(datastoreName="my-store", clientToken="token-1",
                                          tags={"team": "x"})
    assert created["datastoreStatus"] == "CREATING"
    again = api.client.create_datastore(datastoreName="my-store", clientToken="token-1")
    assert again["datastoreId"] == created["datastoreId"]             # idempotent on the token
    props = api.client.get_datastore(datastoreId=created["datastoreId"])["datastoreProperties"]
    assert props["datastoreStatus"] == "CREATING" and props["losslessStorageFormat"] == "HTJ2K"
    clock.now += 2
    listed = api.client.list_datastores(datastoreStatus="ACTIVE")["datastoreSummaries"]
    assert {d["datastoreName"] for d in listed} == {"reconciler-emulator", "my-store"}
    with pytest.raises(api.exceptions.ConflictException):
        api.client.delete_datastore(datastoreId=api.ds)                 # holds image sets
    deleting = api.client.delete_datastore(datastoreId=created["datastoreId"])
    assert deleting["datastoreStatus"] == "DELETING"
    clock.now += 1
    props = api.client.get_datastore(datastoreId=created["datastoreId"])["datastoreProperties"]
    assert props["datastoreStatus"] == "DELETED"
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.client.search_image_sets(datastoreId=created["datastoreId"])


def test_list_datastores_paginates(api):
    for n in range(5):
        api.client.create_datastore(datastoreName=f"s{n}")
    pages = list(api.client.get_paginator("list_datastores").paginate(
        PaginationConfig={"PageSize": 2}))
    assert [len(p["datastoreSummaries"]) for p in pages] == [2, 2, 2]
    names = [d["datastoreName"] for p in pages for d in p["datastoreSummaries"]]
    assert sorted(names) == sorted(["reconciler-emulator"] + [f"s{n}" for n in range(5)])


def test_unknown_resources(api):
    image_set = api.image_set(CT_STUDY)
    with pytest.raises(api.exceptions.ResourceNotFoundException, match="Version 99"):
        api.get(image_set, "99")
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.meta(image_set, "99")
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.update("0" * 32, DESCRIPTION, latest="1")
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.client.get_image_set(datastoreId="0" * 32, imageSetId=image_set)
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.client.get_datastore(datastoreId="0" * 32)
    api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    api.wait(image_set)
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.client.list_image_set_versions(datastoreId=api.ds, imageSetId=image_set)
