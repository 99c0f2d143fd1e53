"""Fidelity fixes found by auditing the emulator against the botocore model and the guide.

Each test failed before its fix: search timestamps at wire precision, a date-only EQUAL,
force on primary image sets, promoteToPrimary onto a study with a primary image set, an
idempotent DeleteImageSet, the copy source's updatedAt, exact version ids, and the
validation errors of bad request bodies.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from emulator_support import CT_STUDY, NM_STUDY, Api, series_and_instance

from reconciler.emulator.behaviours import markdown_table

README = Path(__file__).resolve().parents[2] / "reconciler" / "emulator" / "README.md"


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _between(field: str, low, high) -> dict:
    return {"operator": "BETWEEN", "values": [{field: low}, {field: high}]}


def _search(api: Api, *filters) -> list[str]:
    found = api.client.search_image_sets(datastoreId=api.ds,
                                         searchCriteria={"filters": list(filters)})
    return [s["imageSetId"] for s in found["imageSetsMetadataSummaries"]]


def test_search_compares_timestamps_at_wire_precision(make_api):
    # 0.6 ms past the second: the wire says .001, so the value read back is *later* than the
    # stored one and a BETWEEN starting there missed the very image set it was read from.
    api = make_api(clock=FakeClock(1_700_000_000.0006))
    ct = api.image_set(CT_STUDY)
    props = api.get(ct)
    day = dt.timedelta(days=1)
    for field in ("updatedAt", "createdAt"):
        assert ct in _search(api, _between(field, props[field], props[field] + day))
        assert ct in _search(api, {"operator": "EQUAL", "values": [{field: props[field]}]})


def test_date_only_equal_means_that_date_at_midnight(api):
    nm, ct = api.image_set(NM_STUDY), api.image_set(CT_STUDY)
    date = api.meta(nm)["Study"]["DICOM"]["StudyDate"]           # the NM study: 185059
    api.apply(ct, {"Study": {"DICOM": {"StudyDate": date, "StudyTime": "000000"}}})
    equal = {"operator": "EQUAL", "values": [{"DICOMStudyDateAndTime": {
        "DICOMStudyDate": date}}]}
    assert _search(api, equal) == [ct]


def test_force_lifts_nothing_on_primary_image_sets(make_api):
    private = "00091001"

    def add_private(api: Api) -> dict:
        image_set = api.image_set(CT_STUDY)
        suid, sop = series_and_instance(api.meta(image_set))
        node = {"DICOM": {private: "X"}, "DICOMVRs": {private: "LO"}}
        return api.apply(image_set, {"Study": {"Series": {suid: {"Instances": {sop: node}}}}},
                         force=True)

    primary = add_private(make_api())                                # seeds are primary
    assert primary["isPrimary"] and primary["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "non-primary image sets only" in primary["message"]
    non_primary = add_private(make_api(behaviours={"seed_primary": False}))
    assert non_primary["imageSetWorkflowStatus"] == "UPDATED"
    allowed = add_private(make_api(behaviours={"primary_force": "allow"}))
    assert allowed["imageSetWorkflowStatus"] == "UPDATED"


def _primaries(api: Api, study: str) -> list[str]:
    return sorted(_search(api, {"operator": "EQUAL", "values": [
        {"DICOMStudyInstanceUID": study}]}, {"operator": "EQUAL", "values": [
            {"isPrimary": True}]}))


def _promote(api: Api, source: str) -> str:
    copy = api.client.copy_image_set(
        datastoreId=api.ds, sourceImageSetId=source, promoteToPrimary=True,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}})
    dest = copy["destinationImageSetProperties"]["imageSetId"]
    api.wait(dest)
    api.wait(source)
    return dest


def test_promote_to_primary_never_leaves_two_primaries_of_a_study(make_api):
    api = make_api()
    ct = api.image_set(CT_STUDY)
    dest = _promote(api, ct)
    final = api.get(dest)
    assert (final["imageSetWorkflowStatus"], final["isPrimary"]) == ("COPY_FAILED", False)
    assert "already has a primary image set" in final["message"]
    assert _primaries(api, CT_STUDY) == [ct]

    api = make_api(behaviours={"promote_onto_primary": "demote_existing"})
    ct = api.image_set(CT_STUDY)
    dest = _promote(api, ct)
    assert api.get(dest)["imageSetWorkflowStatus"] == "COPIED"
    assert _primaries(api, CT_STUDY) == [dest]
    assert api.get(ct)["isPrimary"] is False


def test_delete_image_set_is_idempotent(api):
    ct = api.image_set(CT_STUDY)
    first = api.client.delete_image_set(datastoreId=api.ds, imageSetId=ct)
    again = api.client.delete_image_set(datastoreId=api.ds, imageSetId=ct)   # an SDK retry
    assert again["imageSetWorkflowStatus"] in ("DELETING", "DELETED")
    assert first["imageSetId"] == again["imageSetId"]
    assert api.wait(ct)["imageSetState"] == "DELETED"
    done = api.client.delete_image_set(datastoreId=api.ds, imageSetId=ct)
    assert (done["imageSetState"], done["imageSetWorkflowStatus"]) == ("DELETED", "DELETED")


def test_copy_moves_the_source_updated_at(make_api):
    clock = FakeClock(1_700_000_000.0)
    api = make_api(clock=clock)
    ct = api.image_set(CT_STUDY)
    seeded = api.get(ct)["updatedAt"]
    clock.now += 60
    copy = api.client.copy_image_set(datastoreId=api.ds, sourceImageSetId=ct,
                                     copyImageSetInformation={"sourceImageSet": {
                                         "latestVersionId": "1"}})
    source = copy["sourceImageSetProperties"]
    assert source["updatedAt"] == copy["destinationImageSetProperties"]["updatedAt"]
    assert source["updatedAt"] - seeded == dt.timedelta(seconds=60)
    assert api.get(ct)["updatedAt"] > seeded


def test_version_ids_are_exact_strings(api):
    ct = api.image_set(CT_STUDY)
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.get(ct, "01")
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.meta(ct, "01")
    with pytest.raises(api.exceptions.ConflictException):
        api.update(ct, {"Patient": {"DICOM": {"PatientName": "A^B"}}}, latest="01")
    api.apply(ct, {"Patient": {"DICOM": {"PatientName": "A^B"}}})
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.update(ct, revert="01")


def _post(url: str, body) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response), ""
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers.get("x-amzn-ErrorType", "")


def test_bad_bodies_get_validation_errors_naming_the_member(api):
    ct = api.image_set(CT_STUDY)
    update = (f"{api.emulator.url}/datastore/{api.ds}/imageSet/{ct}/updateImageSetMetadata"
              f"?latestVersion=1")
    blob = "eyJTY2hlbWFWZXJzaW9uIjoxLjF9"      # {"SchemaVersion":1.1}
    status, body, code = _post(update, {"DICOMUpdates": {"updatableAttributes": blob,
                                                         "removeableAttributes": blob}})
    assert (status, code) == (400, "ValidationException")
    assert "Unknown member 'removeableAttributes'" in body["message"]
    assert "updateImageSetMetadataUpdates.DICOMUpdates" in body["message"]
    status, body, code = _post(update, {"revertToVersion": "1"})
    assert (status, code) == (400, "ValidationException")
    assert "'revertToVersion'" in body["message"]
    status, body, _ = _post(update, {"DICOMUpdates": {"updatableAttributes": blob},
                                     "revertToVersionId": "1"})
    assert status == 400 and "got 2: DICOMUpdates, revertToVersionId" in body["message"]
    assert "Value 'null'" not in body["message"]
    search = f"{api.emulator.url}/datastore/{api.ds}/searchImageSets"
    status, body, code = _post(search, {"searchCriteria": {"filters": []}})
    assert (status, code) == (400, "ValidationException")
    assert "Unknown member 'searchCriteria'" in body["message"]
    assert api.latest(ct) == "1"                              # nothing was written


def test_readme_behaviour_table_is_generated_from_the_registry():
    text = README.read_text("utf-8")
    assert markdown_table() in text, "regenerate with behaviours.markdown_table()"
