"""SearchImageSets: every filter attribute, EQUAL / BETWEEN, sort, pagination, DICOMTags."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from emulator_support import CT_STUDY, MR_STUDY, NM_STUDY, OT_STUDY, RT_STUDY


def _search(api, *filters, sort=None, **kw):
    criteria = {}
    if filters:
        criteria["filters"] = list(filters)
    if sort:
        criteria["sort"] = sort
    response = api.client.search_image_sets(datastoreId=api.ds, searchCriteria=criteria, **kw)
    return response


def _ids(response):
    return [s["imageSetId"] for s in response["imageSetsMetadataSummaries"]]


def _eq(attribute, value):
    return {"operator": "EQUAL", "values": [{attribute: value}]}


def test_empty_criteria_lists_every_image_set(api):
    found = api.client.search_image_sets(datastoreId=api.ds)["imageSetsMetadataSummaries"]
    assert len(found) == 5
    assert sorted(s["imageSetId"] for s in found) == sorted(api.emulator.image_set_ids)


def test_summary_types_and_dicom_tags(api):
    image_set = api.image_set(NM_STUDY)
    [summary] = _search(api, _eq("DICOMStudyInstanceUID", NM_STUDY))["imageSetsMetadataSummaries"]
    assert summary["imageSetId"] == image_set
    assert summary["version"] == 1 and isinstance(summary["version"], int)
    assert summary["isPrimary"] is True and summary["storageTier"] == "FREQUENT_ACCESS"
    tags = summary["DICOMTags"]
    doc = api.meta(image_set)
    suid, series = next(iter(doc["Study"]["Series"].items()))
    assert tags["DICOMPatientId"] == doc["Patient"]["DICOM"]["PatientID"]
    assert tags["DICOMPatientName"] == doc["Patient"]["DICOM"]["PatientName"]
    assert tags["DICOMStudyInstanceUID"] == NM_STUDY
    assert tags["DICOMSeriesInstanceUID"] == suid
    assert tags["DICOMSeriesModality"] == "NM"
    assert tags["DICOMNumberOfStudyRelatedSeries"] == 1
    assert tags["DICOMNumberOfStudyRelatedInstances"] == 2
    assert tags["DICOMSeriesNumber"] == int(series["DICOM"]["SeriesNumber"])
    assert tags["DICOMStudyDate"] == doc["Study"]["DICOM"]["StudyDate"]


@pytest.mark.parametrize("attribute, path", [
    ("DICOMPatientId", ("Patient", "PatientID")),
    ("DICOMAccessionNumber", ("Study", "AccessionNumber")),
    ("DICOMStudyId", ("Study", "StudyID")),
    ("DICOMStudyInstanceUID", ("Study", "StudyInstanceUID")),
])
def test_equal_on_dicom_attributes(api, attribute, path):
    image_set = api.image_set(RT_STUDY)
    value = api.meta(image_set)[path[0]]["DICOM"][path[1]]
    if value is None:   # RT plan has no accession number: give it one
        value = "ACC-1"
        api.apply(image_set, {path[0]: {"DICOM": {path[1]: value}}})
    assert _ids(_search(api, _eq(attribute, value))) == [image_set]
    assert _ids(_search(api, _eq(attribute, value + "9"))) == []


def test_series_instance_uid_matches_any_series(api):
    image_set = api.image_set(OT_STUDY)
    suid = next(iter(api.meta(image_set)["Study"]["Series"]))
    assert _ids(_search(api, _eq("DICOMSeriesInstanceUID", suid))) == [image_set]


def test_study_date_and_time(api):
    nm = api.image_set(NM_STUDY)
    doc = api.meta(nm)["Study"]["DICOM"]
    date, time = doc["StudyDate"], doc["StudyTime"]
    # A date alone means that date at 00:00 (the CLI documentation), also for EQUAL: the NM
    # study's time is 185059, so only the exact date and time finds it.
    assert time.strip() not in ("", "000000")
    assert nm not in _ids(_search(api, _eq("DICOMStudyDateAndTime", {"DICOMStudyDate": date})))
    exact = {"DICOMStudyDate": date, "DICOMStudyTime": time}
    assert nm in _ids(_search(api, _eq("DICOMStudyDateAndTime", exact)))
    def between(upper_time):
        return {"operator": "BETWEEN", "values": [
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": "19000101"}},
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": "20040119",
                                       "DICOMStudyTime": upper_time}}]}

    ct, rt = api.image_set(CT_STUDY), api.image_set(RT_STUDY)   # 20040119 072730, 20030716
    assert sorted(_ids(_search(api, between("072730")))) == sorted([ct, rt])
    assert _ids(_search(api, between("072729"))) == [rt]
    # DICOMStudyTime defaults to 00:00 (docs/service-notes.md#search).
    assert _ids(_search(api, between(""))) == [rt]


def test_created_and_updated_at_between_and_two_filters(api):
    ct = api.image_set(CT_STUDY)
    api.apply(ct, {"Study": {"DICOM": {"StudyDescription": "X"}}})
    updated = api.get(ct)["updatedAt"]
    window = {"operator": "BETWEEN", "values": [{"updatedAt": updated - dt.timedelta(seconds=0.001)},
                                                {"updatedAt": updated + dt.timedelta(seconds=1)}]}
    assert _ids(_search(api, window)) == [ct]
    created = {"operator": "BETWEEN", "values": [{"createdAt": dt.datetime(2000, 1, 1)},
                                                 {"createdAt": dt.datetime(2100, 1, 1)}]}
    assert len(_ids(_search(api, created))) == 5
    both = _search(api, created, _eq("DICOMStudyInstanceUID", MR_STUDY))
    assert _ids(both) == [api.image_set(MR_STUDY)]
    with pytest.raises(api.exceptions.ValidationException):       # the model allows 2 filters
        _search(api, created, created, created)


def test_is_primary(make_api):
    api = make_api(behaviours={"seed_primary": "false"})
    assert _ids(_search(api, _eq("isPrimary", True))) == []
    assert len(_ids(_search(api, _eq("isPrimary", False)))) == 5


@pytest.mark.parametrize("filt, fragment", [
    ({"operator": "BETWEEN", "values": [{"updatedAt": dt.datetime(2000, 1, 1)}]}, "takes 2"),
    ({"operator": "EQUAL", "values": [{"DICOMPatientId": "a"}, {"DICOMPatientId": "b"}]},
     "takes 1"),
    ({"operator": "BETWEEN", "values": [{"DICOMPatientId": "a"},
                                        {"updatedAt": dt.datetime(2000, 1, 1)}]}, "same attribute"),
    ({"operator": "LIKE", "values": [{"DICOMPatientId": "a"}]}, "enum value set"),
    ({"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": "1.2.x"}]}, "regular expression"),
])
def test_invalid_filters(api, filt, fragment):
    with pytest.raises(api.exceptions.ValidationException) as err:
        _search(api, filt)
    assert fragment in err.value.response["Error"]["Message"]


def test_sort_orders(api):
    ct = api.image_set(CT_STUDY)
    api.apply(ct, {"Study": {"DICOM": {"StudyDescription": "X"}}})
    default = _search(api)
    assert _ids(default)[0] == ct             # default: updatedAt DESC
    assert "sort" not in default
    for field in ("updatedAt", "createdAt", "DICOMStudyDateAndTime"):
        for order in ("ASC", "DESC"):
            response = _search(api, sort={"sortField": field, "sortOrder": order})
            assert response["sort"] == {"sortField": field, "sortOrder": order}
            summaries = response["imageSetsMetadataSummaries"]
            if field == "DICOMStudyDateAndTime":
                keys = [(s["DICOMTags"].get("DICOMStudyDate", ""),
                         s["DICOMTags"].get("DICOMStudyTime", "")) for s in summaries]
            else:
                keys = [s[field] for s in summaries]
            assert keys == sorted(keys, reverse=order == "DESC")


def test_pagination_over_more_than_50_image_sets(api):
    backend = api.emulator.backend
    template = backend.metadata(api.image_set(MR_STUDY), 1)
    for n in range(60):
        doc = copy.deepcopy(template)
        doc["Study"]["DICOM"]["StudyInstanceUID"] = f"1.2.3.{n}"
        backend.add_image_set(api.ds, doc)
    first = api.client.search_image_sets(datastoreId=api.ds)
    assert len(first["imageSetsMetadataSummaries"]) == 50 and first["nextToken"]
    pages = api.client.get_paginator("search_image_sets").paginate(
        datastoreId=api.ds, PaginationConfig={"PageSize": 25})
    ids = [s["imageSetId"] for p in pages for s in p["imageSetsMetadataSummaries"]]
    assert len(ids) == 65 == len(set(ids))
    with pytest.raises(api.exceptions.ValidationException):
        api.client.search_image_sets(datastoreId=api.ds, maxResults=51)
    with pytest.raises(api.exceptions.ValidationException, match="nextToken"):
        api.client.search_image_sets(datastoreId=api.ds, nextToken="garbage")
    with pytest.raises(api.exceptions.ValidationException, match="nextToken"):
        _search(api, _eq("DICOMPatientId", "x"), nextToken=first["nextToken"])


def test_search_shows_the_latest_completed_version(make_api):
    from test_lifecycle import FakeClock

    clock = FakeClock()
    # About the index, not primary rules: a per-image-set PatientName change, pinned to off.
    api = make_api(update_delay=1, clock=clock, behaviours={"primary_restricted_levels": "off"})
    ct = api.image_set(CT_STUDY)
    api.update(ct, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}}})
    [hit] = _search(api, _eq("DICOMStudyInstanceUID", CT_STUDY))["imageSetsMetadataSummaries"]
    assert hit["version"] == 1 and hit["DICOMTags"]["DICOMPatientName"] != "NEW^NAME"
    clock.now += 1
    [hit] = _search(api, _eq("DICOMStudyInstanceUID", CT_STUDY))["imageSetsMetadataSummaries"]
    assert hit["version"] == 2 and hit["DICOMTags"]["DICOMPatientName"] == "NEW^NAME"


def test_search_index_lag(make_api):
    from test_lifecycle import FakeClock

    clock = FakeClock()
    api = make_api(update_delay=0, clock=clock, behaviours={"search_index_lag": 5})
    ct = api.image_set(CT_STUDY)
    final = api.apply(ct, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}}},
                      include_study=True)       # a seeded, primary image set: study-wide
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    [hit] = _search(api, _eq("DICOMStudyInstanceUID", CT_STUDY))["imageSetsMetadataSummaries"]
    assert hit["version"] == 1 and hit["DICOMTags"]["DICOMPatientName"] != "NEW^NAME"
    clock.now += 4.9
    [hit] = _search(api, _eq("DICOMStudyInstanceUID", CT_STUDY))["imageSetsMetadataSummaries"]
    assert hit["version"] == 1
    clock.now += 0.1
    [hit] = _search(api, _eq("DICOMStudyInstanceUID", CT_STUDY))["imageSetsMetadataSummaries"]
    assert hit["version"] == 2 and hit["DICOMTags"]["DICOMPatientName"] == "NEW^NAME"


def test_seeded_image_sets_are_searchable_at_once_under_index_lag(make_api, tmp_path):
    """Seeds stand for data imported long ago: a client that searches right at startup (a
    plan) finds them, whatever search_index_lag; so does the Python API's add_image_set."""
    from test_lifecycle import FakeClock

    clock = FakeClock()
    api = make_api(clock=clock, behaviours={"search_index_lag": 5})
    found = api.client.search_image_sets(datastoreId=api.ds)["imageSetsMetadataSummaries"]
    assert sorted(_ids({"imageSetsMetadataSummaries": found})) == sorted(
        api.emulator.image_set_ids) and len(found) == 5
    [hit] = _search(api, _eq("DICOMStudyInstanceUID", NM_STUDY))["imageSetsMetadataSummaries"]
    assert hit["imageSetId"] == api.image_set(NM_STUDY) and hit["version"] == 1
    doc = copy.deepcopy(api.emulator.backend.metadata(api.image_set(MR_STUDY), 1))
    doc["Study"]["DICOM"]["StudyInstanceUID"] = "1.2.3.99"
    added = api.emulator.backend.add_image_set(api.ds, doc).image_set_id
    assert _ids(_search(api, _eq("DICOMStudyInstanceUID", "1.2.3.99"))) == [added]
    # A restart from --data-dir keeps them searchable at once.
    from emulator_support import EXAMPLES_DICOM, Api

    from reconciler.emulator.server import ThreadedEmulator
    data = str(tmp_path / "data")
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], data_dir=data, clock=clock,
                          behaviours={"search_index_lag": 5}):
        pass
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], data_dir=data, clock=clock,
                          behaviours={"search_index_lag": 5}) as again:
        found = Api(again).client.search_image_sets(datastoreId=again.datastore_id)
        assert len(found["imageSetsMetadataSummaries"]) == 5


def test_search_on_unknown_datastore(api):
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.client.search_image_sets(datastoreId="0" * 32)
