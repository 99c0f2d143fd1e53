"""What successful updates do: values, removals, force, versions, revert, study-wide updates."""

from __future__ import annotations

import copy

import pytest
from emulator_support import CT_STUDY, NM_STUDY, OT_STUDY, series_and_instance

# Tests of update semantics other than the primary-image-set rules pin
# primary_restricted_levels=off (the pre-2025 service): their Patient/Series changes go to one
# seeded (primary) image set, which the default reading refuses. Those rules are tested below.
OFF = {"primary_restricted_levels": "off"}


def test_update_creates_a_new_version_and_keeps_the_old_one_readable(make_api):
    api = make_api(update_delay=0.05, behaviours=OFF)   # about versions, not primary rules
    image_set = api.image_set(CT_STUDY)
    before = api.meta(image_set)
    final = api.apply(image_set, {"Patient": {"DICOM": {"PatientName": "DOE^JANE",
                                                         "PatientBirthDate": None}},
                                  "Study": {"DICOM": {"StudyDescription": "CT CHEST",
                                                      "RequestingService": "new"}}})
    assert (final["versionId"], final["imageSetState"],
            final["imageSetWorkflowStatus"]) == ("2", "ACTIVE", "UPDATED")
    assert "overrides" not in final and "message" not in final
    after = api.meta(image_set)
    assert after["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"
    assert after["Patient"]["DICOM"]["PatientBirthDate"] is None
    assert after["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"
    assert after["Study"]["DICOM"]["RequestingService"] == "new"     # added
    assert api.meta(image_set, "1") == before
    assert api.meta(image_set, "2") == after
    assert api.get(image_set, "1")["imageSetWorkflowStatus"] == "IMPORTED"
    untouched = copy.deepcopy(after)
    untouched["Patient"]["DICOM"].update(PatientName=before["Patient"]["DICOM"]["PatientName"])
    untouched["Study"]["DICOM"]["StudyDescription"] = before["Study"]["DICOM"]["StudyDescription"]
    del untouched["Study"]["DICOM"]["RequestingService"]
    assert untouched == before        # nothing else moved


def test_series_and_instance_level_updates(make_api):
    api = make_api(update_delay=0.05, behaviours=OFF)   # about Series/Instance paths
    image_set = api.image_set(CT_STUDY)
    suid, sop = series_and_instance(api.meta(image_set))
    api.apply(image_set, {"Study": {"Series": {suid: {
        "DICOM": {"SeriesDescription": "AXIAL 5mm"},
        "Instances": {sop: {"DICOM": {"ImageComments": "reviewed"}}}}}}})
    doc = api.meta(image_set)
    assert doc["Study"]["Series"][suid]["DICOM"]["SeriesDescription"] == "AXIAL 5mm"
    assert doc["Study"]["Series"][suid]["Instances"][sop]["DICOM"]["ImageComments"] == "reviewed"


def test_removal_with_the_current_value(api):
    image_set = api.image_set(CT_STUDY)
    current = api.meta(image_set)["Study"]["DICOM"]["StudyDescription"]
    final = api.apply(image_set, None, {"Study": {"DICOM": {"StudyDescription": current}}})
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    assert "StudyDescription" not in api.meta(image_set)["Study"]["DICOM"]


def test_both_blobs_in_one_request_removals_first(make_api):
    api = make_api(update_delay=0.05, behaviours=OFF)   # about removal order (a Patient removal)
    image_set = api.image_set(CT_STUDY)
    doc = api.meta(image_set)
    old = doc["Study"]["DICOM"]["StudyDescription"]
    final = api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "NEW"}}},
                      {"Study": {"DICOM": {"StudyDescription": old}},
                       "Patient": {"DICOM": {"PatientSex": doc["Patient"]["DICOM"]["PatientSex"]}}})
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    after = api.meta(image_set)
    assert after["Study"]["DICOM"]["StudyDescription"] == "NEW"
    assert "PatientSex" not in after["Patient"]["DICOM"]


def test_apply_order_updates_first(make_api):
    api = make_api(behaviours={"apply_order": "updates_first"})
    image_set = api.image_set(CT_STUDY)
    old = api.meta(image_set)["Study"]["DICOM"]["StudyDescription"]
    final = api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "NEW"}}},
                      {"Study": {"DICOM": {"StudyDescription": old}}})
    # The update ran first, so the removal no longer matches.
    assert final["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "does not match" in final["message"]


def test_removal_mismatch_ignore(make_api):
    # about mismatching removals (of a Patient element), not primary rules
    api = make_api(behaviours={"removal_mismatch": "ignore", **OFF})
    image_set = api.image_set(CT_STUDY)
    before = api.meta(image_set)
    final = api.apply(image_set, None, {"Patient": {"DICOM": {"PatientName": "WRONG"}}})
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    assert api.meta(image_set)["Patient"] == before["Patient"]


def test_remove_an_instance(api):
    image_set = api.image_set(OT_STUDY)
    doc = api.meta(image_set)
    suid, series = next(iter(doc["Study"]["Series"].items()))
    sop = sorted(series["Instances"])[0]
    final = api.apply(image_set, None, {"Study": {"Series": {suid: {"Instances": {sop: {}}}}}})
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    instances = api.meta(image_set)["Study"]["Series"][suid]["Instances"]
    assert sop not in instances and len(instances) == 2


def test_remove_instance_needs_force_behaviour(make_api):
    # force is for non-primary image sets (primary_force), so the seeds are non-primary here.
    api = make_api(behaviours={"remove_instance_needs_force": True, "seed_primary": False},
                   validation="sync")
    image_set = api.image_set(OT_STUDY)
    suid, sop = series_and_instance(api.meta(image_set))
    removal = {"Study": {"Series": {suid: {"Instances": {sop: {}}}}}}
    with pytest.raises(api.exceptions.ValidationException, match="requires force"):
        api.update(image_set, None, removal)
    assert api.apply(image_set, None, removal, force=True)["imageSetWorkflowStatus"] == "UPDATED"


def test_remove_a_whole_series(api):
    image_set = api.image_set(CT_STUDY)
    doc = api.meta(image_set)
    suid, series = next(iter(doc["Study"]["Series"].items()))
    # Give the image set a second series (through the Python API), then remove the first.
    two = copy.deepcopy(doc)
    two["Study"]["Series"]["1.2.3.4.5"] = copy.deepcopy(series)
    two["Study"]["Series"]["1.2.3.4.5"]["DICOM"]["SeriesInstanceUID"] = "1.2.3.4.5"
    other = api.emulator.backend.add_image_set(api.ds, two, image_set_id="f" * 32).image_set_id
    final = api.apply(other, None, {"Study": {"Series": {suid: {}}}})
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    assert list(api.meta(other)["Study"]["Series"]) == ["1.2.3.4.5"]


def test_an_image_set_keeps_at_least_one_instance(api):
    image_set = api.image_set(CT_STUDY)
    suid, _ = series_and_instance(api.meta(image_set))
    final = api.apply(image_set, None, {"Study": {"Series": {suid: {}}}})
    assert final["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "at least one instance" in final["message"]


def test_private_tags_with_force(make_api):
    api = make_api(behaviours={"seed_primary": False})     # force is for non-primary sets
    image_set = api.image_set(CT_STUDY)
    suid, sop = series_and_instance(api.meta(image_set))

    def instance(dicom, vrs=None):
        node = {"DICOM": dicom, **({"DICOMVRs": vrs} if vrs else {})}
        return {"Study": {"Series": {suid: {"Instances": {sop: node}}}}}

    final = api.apply(image_set, instance({"00091001": "GE_GENESIS_DD", "001910F9": "97"},
                                          {"001910F9": "DS"}), force=True)
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    assert final["overrides"] == {"forced": True}
    node = api.meta(image_set)["Study"]["Series"][suid]["Instances"][sop]
    assert node["DICOM"]["00091001"] == "GE_GENESIS_DD"
    assert node["DICOM"]["001910F9"] == "97" and node["DICOMVRs"]["001910F9"] == "DS"
    final = api.apply(image_set, None, instance({"001910F9": "97"}), force=True)
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    node = api.meta(image_set)["Study"]["Series"][suid]["Instances"][sop]
    assert "001910F9" not in node["DICOM"] and "001910F9" not in node["DICOMVRs"]


@pytest.mark.parametrize("updatable", [
    {"Patient": {"DICOM": {"OtherPatientIDsSequence": [{"PatientID": "X", "TypeOfPatientID": "TEXT"}]}}},
    {"Patient": {"DICOM": {"PatientBirthDate": "not-a-date"}}},
    {"Study": {"DICOM": {"StudyID": "S-1"}}},
])
def test_force_allows_and_is_recorded(make_api, updatable):
    api = make_api(behaviours={"seed_primary": False})     # force is for non-primary sets
    image_set = api.image_set(CT_STUDY)
    final = api.apply(image_set, updatable, force=True)
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    assert final["overrides"] == {"forced": True}
    versions = api.client.list_image_set_versions(datastoreId=api.ds, imageSetId=image_set)
    by_id = {v["versionId"]: v for v in versions["imageSetPropertiesList"]}
    assert by_id["2"]["overrides"] == {"forced": True} and "overrides" not in by_id["1"]
    level = next(iter(updatable))
    assert api.meta(image_set)[level]["DICOM"] == {**api.meta(image_set, "1")[level]["DICOM"],
                                                   **updatable[level]["DICOM"]}


def test_force_false_records_nothing(api):
    image_set = api.image_set(CT_STUDY)
    final = api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "X"}}}, force=False)
    assert "overrides" not in final


def test_forced_uid_change_on_a_non_primary_image_set_rekeys(make_api):
    api = make_api(behaviours={"seed_primary": "false"})
    image_set = api.image_set(CT_STUDY)
    suid, sop = series_and_instance(api.meta(image_set))
    final = api.apply(image_set, {"Study": {"Series": {suid: {"Instances": {
        sop: {"DICOM": {"SOPInstanceUID": "1.2.3.4.5.6"}}}}}}}, force=True)
    assert final["imageSetWorkflowStatus"] == "UPDATED" and final["isPrimary"] is False
    instances = api.meta(image_set)["Study"]["Series"][suid]["Instances"]
    assert list(instances) == ["1.2.3.4.5.6"]
    assert instances["1.2.3.4.5.6"]["DICOM"]["SOPInstanceUID"] == "1.2.3.4.5.6"


def test_primary_uid_force_allow(make_api):
    api = make_api(behaviours={"primary_uid_force": "allow", "primary_force": "allow"})
    image_set = api.image_set(CT_STUDY)
    final = api.apply(image_set, {"Study": {"DICOM": {"StudyInstanceUID": "1.2.3"}}}, force=True)
    assert final["imageSetWorkflowStatus"] == "UPDATED"


def test_revert_creates_a_new_version_with_old_content(api):
    image_set = api.image_set(CT_STUDY)
    original = api.meta(image_set)
    api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "A"}}})
    api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "B"}}})
    response = api.update(image_set, revert="1", latest="3")
    assert response["latestVersionId"] == "4" and response["imageSetState"] == "LOCKED"
    assert api.wait(image_set)["imageSetWorkflowStatus"] == "UPDATED"
    assert api.meta(image_set) == original
    assert api.meta(image_set, "3")["Study"]["DICOM"]["StudyDescription"] == "B"
    with pytest.raises(api.exceptions.ConflictException):
        api.update(image_set, revert="2", latest="3")          # revert also needs the latest


def test_revert_to_an_unknown_version(api, make_api):
    image_set = api.image_set(CT_STUDY)
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.update(image_set, revert="9")
    other = make_api(behaviours={"revert_unknown_version": "validation"})
    with pytest.raises(other.exceptions.ValidationException):
        other.update(other.image_set(CT_STUDY), revert="9")


# ------------------------------------------------------------------ includeStudyImageSets
def _twin(api, study=CT_STUDY, primary=True, image_set_id="e" * 32):
    """A second image set of the same study (as a re-import would make)."""
    doc = api.emulator.backend.metadata(api.image_set(study), 1)
    return api.emulator.backend.add_image_set(api.ds, doc, image_set_id=image_set_id,
                                              is_primary=primary).image_set_id


def test_include_study_updates_every_primary_image_set_of_the_study(make_api):
    api = make_api(update_delay=0.3)
    target, twin = api.image_set(CT_STUDY), _twin(api)
    bystander = _twin(api, primary=False, image_set_id="d" * 32)
    response = api.update(target, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}},
                                   "Study": {"DICOM": {"StudyDescription": "S"}}},
                          include_study=True)
    assert response["imageSetWorkflowStatus"] == "UPDATING"
    peer = api.get(twin)
    assert (peer["versionId"], peer["imageSetState"], peer["imageSetWorkflowStatus"]) == (
        "2", "LOCKED", "UPDATING_FOR_STUDY_CONSISTENCY")
    assert api.get(bystander)["versionId"] == "1"         # not primary: not included
    assert api.wait(target)["imageSetWorkflowStatus"] == "UPDATED"
    assert api.wait(twin)["imageSetWorkflowStatus"] == "UPDATED"
    for image_set in (target, twin):
        # The default restricts Patient (and Series) on primary sets; study-wide lifts Patient.
        assert api.meta(image_set)["Patient"]["DICOM"]["PatientName"] == "NEW^NAME"
        assert api.meta(image_set)["Study"]["DICOM"]["StudyDescription"] == "S"
    assert api.meta(bystander)["Patient"] == api.meta(bystander, "1")["Patient"]


def test_include_study_does_not_lift_the_series_restriction_on_primary_image_sets(make_api):
    """Under the default (primary_restricted_levels=patient_series) a Series-level element of
    a primary image set is refused even study-wide, and the whole study's request with it."""
    api = make_api()
    target, twin = api.image_set(CT_STUDY), _twin(api)
    suid, _ = series_and_instance(api.meta(target))
    series = {"Study": {"Series": {suid: {"DICOM": {"SeriesDescription": "S"}}}}}
    final = api.apply(target, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}}, **series},
                      include_study=True)
    assert final["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "Series-level attributes cannot be updated on a primary image set" in final["message"]
    assert "Patient-level" not in final["message"]           # that part alone was lifted
    assert api.wait(twin)["imageSetWorkflowStatus"] == "UPDATE_FAILED"      # atomic
    for image_set in (target, twin):
        assert api.meta(image_set) == api.meta(image_set, "1")
    # Per image set it is refused as well; so is the Patient element without the flag.
    final = api.apply(target, series)
    assert final["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "Series-level attributes cannot be updated" in final["message"]
    final = api.apply(target, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}}})
    assert final["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "Patient-level attributes cannot be updated" in final["message"]
    # A non-primary image set of the study takes the Series-level change (the rule is
    # about primary image sets only).
    loose = _twin(api, primary=False, image_set_id="d" * 32)
    assert api.apply(loose, series)["imageSetWorkflowStatus"] == "UPDATED"
    # Synchronous validation refuses the same request at once, with the same reason.
    sync = make_api(validation="sync")
    with pytest.raises(sync.exceptions.ValidationException,
                       match="Series-level attributes cannot be updated on a primary"):
        sync.update(sync.image_set(CT_STUDY), series, include_study=True)


def test_primary_restricted_levels_off_allows_a_study_wide_series_change(make_api):
    api = make_api(behaviours={"primary_restricted_levels": "off"})
    target, twin = api.image_set(CT_STUDY), _twin(api)
    suid, _ = series_and_instance(api.meta(target))
    final = api.apply(target, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}},
                               "Study": {"Series": {suid: {"DICOM": {"SeriesDescription": "S"}}}}},
                      include_study=True)
    assert final["imageSetWorkflowStatus"] == "UPDATED" and final["isPrimary"] is True
    assert api.wait(twin)["imageSetWorkflowStatus"] == "UPDATED"
    assert api.meta(target)["Study"]["Series"][suid]["DICOM"]["SeriesDescription"] == "S"
    assert api.meta(twin)["Patient"]["DICOM"]["PatientName"] == "NEW^NAME"
    # Series-level parts stay with the target (include_study_scope=patient_study).
    assert "SeriesDescription" not in api.meta(twin)["Study"]["Series"][suid]["DICOM"]


def test_include_study_scope_all_levels(make_api):
    # Scope only shows where the service accepts Series elements on a primary image set: off.
    api = make_api(behaviours={"include_study_scope": "all_levels",
                               "primary_restricted_levels": "off"})
    target, twin = api.image_set(CT_STUDY), _twin(api)
    suid, _ = series_and_instance(api.meta(target))
    api.apply(target, {"Study": {"Series": {suid: {"DICOM": {"SeriesDescription": "S"}}}}},
              include_study=True)
    api.wait(twin)
    assert api.meta(twin)["Study"]["Series"][suid]["DICOM"]["SeriesDescription"] == "S"


def test_include_study_is_atomic(make_api):
    api = make_api(update_delay=0.3)
    target, twin = api.image_set(CT_STUDY), _twin(api)
    api.update(twin, {"Study": {"DICOM": {"StudyDescription": "busy"}}})     # twin LOCKED
    with pytest.raises(api.exceptions.ConflictException):
        api.update(target, {"Patient": {"DICOM": {"PatientName": "A^B"}}}, include_study=True)
    assert api.latest(target) == "1"
    api.wait(twin)
    # A violation anywhere fails every image set of the study.
    api.update(target, {"Patient": {"DICOM": {"PatientName": "A^B",
                                              "PatientBirthDate": "bad"}}}, include_study=True)
    assert api.wait(target)["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert api.wait(twin)["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert api.meta(twin)["Patient"] == api.meta(twin, "2")["Patient"]


@pytest.mark.parametrize("levels, attribute, level, blocked", [
    ("patient_series", "PatientName", "Patient", True),
    ("patient_series", "StudyDescription", "Study", False),
    ("patient_study", "StudyDescription", "Study", True),
    ("patient_study", "PatientName", "Patient", True),
    ("off", "PatientName", "Patient", False),
])
def test_primary_restricted_levels(make_api, levels, attribute, level, blocked):
    api = make_api(behaviours={"primary_restricted_levels": levels})
    image_set = api.image_set(NM_STUDY)
    final = api.apply(image_set, {level: {"DICOM": {attribute: "X"}}})
    assert final["imageSetWorkflowStatus"] == ("UPDATE_FAILED" if blocked else "UPDATED")
    if blocked:
        assert "cannot be updated on a primary image set" in final["message"]
        # includeStudyImageSets lifts it (primary_restriction_include_study=allowed).
        again = api.apply(image_set, {level: {"DICOM": {attribute: "X"}}}, include_study=True)
        assert again["imageSetWorkflowStatus"] == "UPDATED"


@pytest.mark.parametrize("levels, refused", [
    (None, True),                    # the default: patient_series
    ("patient_series", True),
    ("patient_study", False),
    ("off", False),
])
def test_a_study_wide_series_change_to_a_primary_image_set(make_api, levels, refused):
    api = make_api(behaviours={"primary_restricted_levels": levels} if levels else {})
    image_set = api.image_set(NM_STUDY)
    suid, _ = series_and_instance(api.meta(image_set))
    final = api.apply(image_set, {"Study": {"Series": {suid: {"DICOM": {
        "SeriesDescription": "S"}}}}}, include_study=True)
    assert final["imageSetWorkflowStatus"] == ("UPDATE_FAILED" if refused else "UPDATED")
    described = api.meta(image_set)["Study"]["Series"][suid]["DICOM"].get("SeriesDescription")
    if refused:
        assert "Series-level attributes cannot be updated on a primary image set" in (
            final["message"])
        assert api.meta(image_set) == api.meta(image_set, "1")
    else:
        assert described == "S"


def test_primary_restriction_include_study_refused(make_api):
    api = make_api(behaviours={"primary_restricted_levels": "patient_study",
                               "primary_restriction_include_study": "refused"})
    image_set = api.image_set(NM_STUDY)
    final = api.apply(image_set, {"Patient": {"DICOM": {"PatientName": "X"}}}, include_study=True)
    assert final["imageSetWorkflowStatus"] == "UPDATE_FAILED"
