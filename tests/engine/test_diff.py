"""The DICOM-aware diff: only declared attributes, no perpetual diffs, the right operations."""

import json
from pathlib import Path

import pytest

from reconciler.engine.diff import (
    ADD, REMOVE, REMOVE_INSTANCE, REMOVE_SERIES, UPDATE, ImageSetProblem, canonical, dicom_equal,
    diff)

from .helpers import desired

SAMPLE = json.loads((Path(__file__).parents[1] / "data" / "aws-sample-metadata.json").read_text())
SERIES = "1.3.51.5145.15142.20010109.1105752"
SOP = "1.3.51.5145.5142.20010109.1105752.1.0.1"


@pytest.mark.parametrize("vr,live,wanted", [
    ("PN", "DOE^JANE", "DOE^JANE^^^"),
    ("PN", "DOE^JANE ", "DOE^JANE"),
    ("PN", "DOE^JANE^^^^=", "DOE^JANE"),
    ("DS", "1.0", "1"),
    ("DS", "6.83760684E-01", "0.683760684"),
    ("IS", "0012", "12"),
    ("IS", " 7 ", "7"),
    ("LO", "CT CHEST  ", "CT CHEST"),
    ("SH", " ACC1", "ACC1"),
    ("UI", "1.2.3\x00", "1.2.3"),
    ("CS", ["ORIGINAL", "PRIMARY"], "ORIGINAL\\PRIMARY"),
    ("CS", ["ISO_IR 100"], "ISO_IR 100"),
    ("US", 16, 16.0),
    ("US", 16, "16"),
    ("LO", None, ""),
    ("LO", [], ""),
    ("LO", "   ", ""),
    ("DS", ["2.80000000E+03"], "2800"),
])
def test_dicom_equal_values(vr, live, wanted):
    assert dicom_equal(live, wanted, vr)


@pytest.mark.parametrize("vr,live,wanted", [
    ("PN", "DOE^JANE", "DOE^JOHN"),
    ("PN", "DOE^JANE", "^DOE^JANE"),
    ("DS", "1.0", "1.01"),
    ("LO", "CT CHEST", "ct chest"),
    ("LT", " note", "note"),          # leading spaces are significant in text VRs
    ("CS", ["ORIGINAL", "PRIMARY"], ["PRIMARY", "ORIGINAL"]),
    ("LO", None, "x"),
    ("US", 16, 17),
])
def test_dicom_unequal_values(vr, live, wanted):
    assert not dicom_equal(live, wanted, vr)


def test_sequences_compare_items_with_their_own_vrs():
    live = [{"CodeValue": "CTCH ", "CodingSchemeDesignator": "L", "CodeMeaning": "CT chest"}]
    same = [{"CodeMeaning": "CT chest", "CodeValue": "CTCH", "CodingSchemeDesignator": "L"}]
    other = [{"CodeValue": "CTAB", "CodingSchemeDesignator": "L", "CodeMeaning": "CT chest"}]
    assert canonical(live, "SQ") == canonical(same, "SQ")
    assert canonical(live, "SQ") != canonical(other, "SQ")


def test_no_change_when_declared_values_match_live_padding_and_format():
    wanted = desired(patient={"PatientName": "MISTER^CR^^", "PatientID": "9227465"},
                     study={"StudyDescription": "pelvis ", "ReferringPhysicianName": ""},
                     series={SERIES: {"SeriesNumber": "01",
                                      "Instances": {SOP: {"RescaleSlope": "0.683760684",
                                                          "ImageType": ["DERIVED", "PRIMARY"]}}}})
    assert diff(wanted, SAMPLE) == []


def test_each_operation_at_each_level():
    wanted = desired(
        patient={"PatientName": "DOE^JANE", "PatientSex": None, "PatientBirthDate": None},
        study={"StudyDescription": None, "StudyID": "17", "AccessionNumber": "0000000006"},
        series={SERIES: {"SeriesDescription": "LAT PELVIS", "OperatorsName": "X^Y",
                         "Instances": {SOP: {"LossyImageCompression": "00",
                                             "00191013": {"vr": "LO", "value": "RP2"},
                                             "00191099": {"vr": "LO", "value": "NEW"}}}}})
    changes = {c.path: c for c in diff(wanted, SAMPLE)}
    assert changes["Patient.PatientName"].op == UPDATE
    assert changes["Patient.PatientName"].before == "MISTER^CR"
    assert changes["Patient.PatientSex"].op == REMOVE             # present as null: removed
    assert changes["Patient.PatientSex"].before is None
    assert changes["Study.StudyDescription"].op == REMOVE
    assert changes["Study.StudyDescription"].before == "pelvis"
    assert changes["Study.StudyID"].op == UPDATE                  # null -> "17"
    assert "Study.AccessionNumber" not in changes                 # equal: no change
    assert changes[f"Series[{SERIES}].SeriesDescription"].op == UPDATE
    assert changes[f"Series[{SERIES}].OperatorsName"].op == ADD
    inst = f"Series[{SERIES}].Instances[{SOP}]"
    assert changes[f"{inst}.LossyImageCompression"].op == ADD
    assert changes[f"{inst}.00191013"].op == UPDATE
    assert changes[f"{inst}.00191013"].vr == "LO"
    assert changes[f"{inst}.00191099"].op == ADD
    assert changes[f"{inst}.00191099"].needs_force
    assert not changes["Patient.PatientName"].needs_force
    assert changes["Study.StudyID"].needs_force
    assert len(changes) == 10


def test_removing_series_and_instances_counts_once_and_absent_ones_are_no_ops():
    wanted = desired(series={SERIES: {"Instances": {SOP: None, "9.9.9": None}}, "8.8.8": None})
    changes = diff(wanted, SAMPLE)
    assert [(c.op, c.series, c.instance) for c in changes] == [(REMOVE_INSTANCE, SERIES, SOP)]
    whole = diff(desired(series={SERIES: None}), SAMPLE)
    assert [(c.op, c.series) for c in whole] == [(REMOVE_SERIES, SERIES)]


def test_declaring_a_missing_series_or_instance_is_a_problem_naming_it():
    with pytest.raises(ImageSetProblem, match="series 1.2.3 is not in image set abc"):
        diff(desired(series={"1.2.3": {"SeriesDescription": "x"}}), SAMPLE, "abc")
    with pytest.raises(ImageSetProblem, match=f"instance 4.5.6 of series {SERIES}"):
        diff(desired(series={SERIES: {"Instances": {"4.5.6": {"ImageComments": "x"}}}}), SAMPLE)


def test_empty_string_is_sent_as_null_and_multi_values_need_force():
    changes = {c.path: c for c in diff(desired(
        study={"StudyDescription": ""},
        series={SERIES: {"SoftwareVersions": ["A", "B"]}}), SAMPLE)}
    assert changes["Study.StudyDescription"].after is None
    assert changes[f"Series[{SERIES}].SoftwareVersions"].needs_force


def test_desired_and_live_values_agree_exactly_when_the_diff_is_empty():
    from reconciler.engine.diff import desired_values, live_values

    wanted = desired(patient={"PatientName": "MISTER^CR^^", "PatientSex": ""},
                     study={"StudyDescription": "pelvis ", "StudyID": None},
                     series={SERIES: {"SeriesNumber": "01",
                                      "Instances": {SOP: {"00191013": {"vr": "LO",
                                                                       "value": "RP1KT"}}}},
                             "9.9.9": None})
    want = desired_values(wanted)
    live = live_values(want, SAMPLE)
    assert diff(wanted, SAMPLE) == [c for c in diff(wanted, SAMPLE) if c.path == "Study.StudyID"]
    assert {p for p in want if want[p] != live[p]} == {"Study.StudyID"}  # null present ≠ absent
    assert live["Series[9.9.9]"] is None
    assert live[f"Series[{SERIES}].Instances[{SOP}].00191013"] == want[
        f"Series[{SERIES}].Instances[{SOP}].00191013"]
