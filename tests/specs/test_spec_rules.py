"""Every validation rule of a spec: a failing case whose diagnostic names file, line, column
and path (``FILE:LINE:COLUMN: PATH: message``), checked exactly."""

from __future__ import annotations

import logging

import pytest
from spec_helpers import HEAD, IMAGE_SET, at


def diag(text: str, needle: str, path: str, message: str, occurrence: int = 1,
         file: str = "s.yaml") -> str:
    line, column = at(text, needle, occurrence)
    return f"{file}:{line}:{column}: {path}: {message}" if path else \
        f"{file}:{line}:{column}: {message}"


# --------------------------------------------------------------------------------------------
# Structure (JSON Schema)
# --------------------------------------------------------------------------------------------
def test_api_version_kind_and_unknown_keys(project):
    text = HEAD.replace("reconciler/v1", "reconciler/v2").replace(
        "ImageSetMetadata", "ImageSet") + "forse: true\nattributes: {}\n"
    assert project.check(text) == [
        diag(text, "reconciler/v2", "apiVersion", "must be reconciler/v1"),
        diag(text, "ImageSet", "kind", "must be ImageSetMetadata"),
        diag(text, "forse", "forse", "unknown key forse; did you mean force?"),
    ]


def test_missing_target_is_reported_at_the_documents_first_key(project):
    text = "# a comment\n\napiVersion: reconciler/v1\nkind: ImageSetMetadata\n" \
           "metadata: {name: a}\nattributes: {}\n"
    assert project.check(text) == ["s.yaml:3:1: missing required key target"]


def test_a_document_that_is_not_a_mapping(project):
    text = "- just\n- a list\n"
    assert project.check(text) == ["s.yaml:1:1: must be a mapping, not a list"]


def test_name_pattern(project):
    text = HEAD.replace("name: case", "name: CT_Chest!") + "attributes: {}\n"
    assert project.check(text) == [diag(
        text, "CT_Chest!", "metadata.name", "must be 1-128 lower-case letters, digits, '.', '_' "
        "or '-', starting and ending with a letter or digit")]


def test_numeric_looking_strings_are_taken_as_written(project):
    text = HEAD.replace("name: case", "name: 0042") + "attributes: {}\n"
    spec, = project.load("s.yaml") if not project.check(text) else [None]
    assert spec.name == "0042"


def test_ids_must_match_the_service_pattern(project):
    text = HEAD.replace(IMAGE_SET, "9A8B-not-an-id") + "attributes: {}\n"
    assert project.check(text) == [diag(text, "9A8B", "target.imageSetId",
                                        "must be 32 lower-case letters or digits ([0-9a-z]{32})")]


def test_exactly_one_of_image_set_id_and_selector(project):
    both = HEAD + "  selector: {isPrimary: true}\nattributes: {}\n"
    assert project.check(both) == [diag(both, "datastoreId:", "target",
                                        "needs exactly one of imageSetId and selector")]
    neither = HEAD.replace(f"  imageSetId: {IMAGE_SET}\n", "") + "attributes: {}\n"
    assert project.check(neither) == [diag(neither, "datastoreId:", "target",
                                           "needs exactly one of imageSetId and selector")]


def test_allow_empty_needs_a_selector(project):
    text = HEAD + "  allowEmpty: true\nattributes: {}\n"
    assert project.check(text) == [diag(text, "datastoreId:", "target",
                                        "allowEmpty applies only to a selector")]


def test_selector_keys_and_values(project):
    text = HEAD.replace(f"  imageSetId: {IMAGE_SET}\n", "") + (
        "  selector:\n"
        "    DICOMStudyInstanceUID: 1.2.03\n"
        "    isPrimary: maybe\n"
        "    DICOMAccessionNumber: ACCESSION-NUMBER-TOO-LONG\n"
        "    PatientID: x\n"
        "attributes: {}\n")
    assert project.check(text) == [
        diag(text, "1.2.03", "target.selector.DICOMStudyInstanceUID",
             "must be a DICOM UID: digits and dots, no leading zeros in a component, "
             "at most 64 characters"),
        diag(text, "maybe", "target.selector.isPrimary", "must be true or false, not a string"),
        diag(text, "ACCESSION", "target.selector.DICOMAccessionNumber",
             "is longer than 16 characters"),
        diag(text, "PatientID", "target.selector.PatientID",
             "unknown key PatientID; did you mean DICOMPatientId?"),
    ]


def test_selector_values_written_as_numbers_are_strings(project):
    text = HEAD.replace(f"  imageSetId: {IMAGE_SET}\n", "") + (
        "  selector: {DICOMStudyId: 0017, DICOMPatientId: 12345, isPrimary: false}\n"
        "attributes: {}\n")
    project.write("s.yaml", text)
    spec, = project.load("s.yaml")
    assert spec.target.selector == {"DICOMStudyId": "0017", "DICOMPatientId": "12345",
                                    "isPrimary": False}


def test_missing_data_store_without_a_default(project):
    text = HEAD.replace("  datastoreId: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n", "") + \
        "attributes: {}\n"
    assert project.check(text) == [diag(
        text, "target:", "target",
        "no data store: set target.datastoreId, or datastoreId in reconciler.yaml")]


def test_wrong_types(project):
    text = HEAD + "force: yes please\nincludeStudyImageSets: 1\nattributes:\n  Patient: []\n"
    assert project.check(text) == [
        diag(text, "yes please", "force", "must be true or false, not a string"),
        diag(text, "1\nattr", "includeStudyImageSets", "must be true or false, not a number"),
        diag(text, "[]", "attributes.Patient", "must be a mapping, not a list"),
    ]


# --------------------------------------------------------------------------------------------
# Keywords, levels, generated attributes
# --------------------------------------------------------------------------------------------
def test_unknown_keyword_suggests_a_close_match(project):
    text = HEAD + "attributes:\n  Patient:\n    PatientsName: DOE^JANE\n    Frobnicate: x\n"
    assert project.check(text) == [
        diag(text, "PatientsName", "attributes.Patient.PatientsName",
             "unknown DICOM keyword PatientsName; did you mean PatientName?"),
        diag(text, "Frobnicate", "attributes.Patient.Frobnicate",
             "unknown DICOM keyword Frobnicate"),
    ]


def test_attribute_keys_that_are_neither_keywords_nor_tags(project):
    text = HEAD + "attributes:\n  Study:\n    Study Description: x\n    DICOM: {}\n"
    assert project.check(text) == [
        diag(text, "Study Description", 'attributes.Study["Study Description"]',
             '"Study Description" is not an attribute key: write a DICOM keyword (e.g. PatientName)'
             " or a private tag of 8 hex digits"),
        diag(text, "DICOM", "attributes.Study.DICOM",
             "unknown key DICOM: attributes go directly under the level; there is no DICOM key "
             "in a spec"),
    ]


def test_attribute_declared_at_the_wrong_level(project):
    text = HEAD + ("attributes:\n"
                   "  Study:\n    PatientName: DOE^JANE\n    ImageComments: x\n"
                   "  Patient:\n    SeriesDescription: x\n"
                   "  Series:\n    1.2.3:\n      StudyDescription: x\n"
                   "      Instances:\n        1.2.3.4:\n          Modality: CT\n")
    instance = "attributes.Series[<SeriesInstanceUID>].Instances[<SOPInstanceUID>]"
    assert project.check(text) == [
        diag(text, "PatientName", "attributes.Study.PatientName",
             "PatientName belongs to the Patient level (declare it under attributes.Patient)"),
        diag(text, "ImageComments", "attributes.Study.ImageComments",
             f"ImageComments belongs to the Instance level (declare it under {instance})"),
        diag(text, "SeriesDescription", "attributes.Patient.SeriesDescription",
             "SeriesDescription belongs to the Series level (declare it under "
             "attributes.Series[<SeriesInstanceUID>])"),
        diag(text, "StudyDescription", 'attributes.Series["1.2.3"].StudyDescription',
             "StudyDescription belongs to the Study level (declare it under attributes.Study)"),
        diag(text, "Modality", 'attributes.Series["1.2.3"].Instances["1.2.3.4"].Modality',
             "Modality belongs to the Series level (declare it under "
             "attributes.Series[<SeriesInstanceUID>])"),
    ]


def test_instances_only_under_a_series(project):
    text = HEAD + "attributes:\n  Study:\n    Instances: {}\n  Instances: {}\n"
    assert project.check(text) == [
        diag(text, "Instances", "attributes.Study.Instances",
             "unknown key Instances: Instances go under a series: "
             "attributes.Series[<SeriesInstanceUID>].Instances"),
        diag(text, "Instances", "attributes.Instances",
             "unknown key Instances: Instances go under a series: "
             "attributes.Series[<SeriesInstanceUID>].Instances", occurrence=2),
    ]


def test_series_and_instance_keys_must_be_uids(project):
    uid = "1." + "2" * 63
    text = HEAD + ("attributes:\n  Series:\n    1.02.3: {}\n    abc: null\n"
                   f"    {uid}: null\n    1.2.3:\n      Instances:\n        1.2.3.04: null\n")
    message = ("must be a DICOM UID: digits and dots, no leading zeros in a component, "
               "at most 64 characters")
    assert project.check(text) == [
        diag(text, "1.02.3", 'attributes.Series["1.02.3"]', message),
        diag(text, "abc", 'attributes.Series["abc"]', message),
        diag(text, uid, f'attributes.Series["{uid}"]', message),
        diag(text, "1.2.3.04", 'attributes.Series["1.2.3"].Instances["1.2.3.04"]', message),
    ]


def test_generated_attributes_are_refused(project):
    text = HEAD + ("force: true\nattributes:\n  Series:\n    1.2.3:\n      Instances:\n"
                   "        1.2.3.4:\n          PixelData: AAAA\n          MinPixelValue: 0\n")
    assert project.check(text) == [
        diag(text, "PixelData", 'attributes.Series["1.2.3"].Instances["1.2.3.4"].PixelData',
             "PixelData is generated by HealthImaging and cannot be changed"),
        diag(text, "MinPixelValue",
             'attributes.Series["1.2.3"].Instances["1.2.3.4"].MinPixelValue',
             "MinPixelValue is generated by HealthImaging and cannot be changed"),
    ]


def test_retired_keywords_warn_but_load(project, caplog):
    # Retired attributes are not in HealthImaging's normalisation table: Instance level.
    text = HEAD + ("attributes:\n  Series:\n    1.2.3:\n      Instances:\n        1.2.3.4:\n"
                   "          StudyComments: old style\n")
    project.write("s.yaml", text)
    warnings: list = []
    spec, = project.load("s.yaml", warnings=warnings)
    instance = spec.attributes.series["1.2.3"].instances["1.2.3.4"]
    assert instance.attributes["StudyComments"].value == "old style"
    assert [str(w) for w in warnings] == [diag(
        text, "StudyComments", 'attributes.Series["1.2.3"].Instances["1.2.3.4"].StudyComments',
        "StudyComments is retired from the DICOM standard")]
    with caplog.at_level(logging.WARNING, logger="reconciler.spec.loader"):
        project.load("s.yaml")
    assert "StudyComments is retired" in caplog.text and "old style" not in caplog.text


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------
def test_values_must_fit_their_vr(project):
    text = HEAD + ("attributes:\n"
                   "  Patient:\n    PatientBirthDate: 19700231\n    PatientSex: female\n"
                   "    PatientName: A^B^C^D^E^F\n"
                   "  Study:\n    StudyTime: 10:15:00\n    StudyDate: '2024-01-05'\n"
                   "    StudyInstanceUID: 1.2.03\n    AccessionNumber: ACCESSION-TOO-LONG-X\n"
                   "    PatientAge: 45Y\n")
    assert project.check(text) == [
        diag(text, "19700231", "attributes.Patient.PatientBirthDate", "is not a calendar date"),
        diag(text, "female", "attributes.Patient.PatientSex",
             "is not a valid CS value (upper-case letters, digits, space and underscore)"),
        diag(text, "A^B", "attributes.Patient.PatientName",
             "has more than 5 name components (family^given^middle^prefix^suffix) in a "
             "component group"),
        diag(text, "10:15", "attributes.Study.StudyTime",
             "is not a valid TM value (HHMMSS.FFFFFF)"),
        diag(text, "'2024", "attributes.Study.StudyDate", "is not a valid DA value (YYYYMMDD)"),
        diag(text, "StudyInstanceUID", "attributes.Study.StudyInstanceUID",
             "changing StudyInstanceUID needs force: true in the spec (HealthImaging refuses it "
             "otherwise)"),
        diag(text, "1.2.03", "attributes.Study.StudyInstanceUID",
             "is not a valid UI value (digits and dots, no leading zeros in a component)"),
        diag(text, "ACCESSION", "attributes.Study.AccessionNumber",
             "is 20 characters long; VR SH allows at most 16"),
        diag(text, "45Y", "attributes.Study.PatientAge",
             "is not a valid AS value (nnnD, nnnW, nnnM or nnnY, e.g. 045Y)"),
    ]


def test_value_multiplicity(project):
    text = HEAD + ("force: true\nattributes:\n  Study:\n    StudyDescription: [A, B]\n"
                   "  Series:\n    1.2.3:\n      Instances:\n        1.2.3.4:\n"
                   "          ImageType: ORIGINAL\n          PixelSpacing: [0.5, 0.5, 0.5]\n")
    base = 'attributes.Series["1.2.3"].Instances["1.2.3.4"]'
    assert project.check(text) == [
        diag(text, "[A, B]", "attributes.Study.StudyDescription",
             "has 2 values; StudyDescription takes exactly 1 value (VM 1)"),
        diag(text, "ORIGINAL", f"{base}.ImageType",
             "has 1 value; ImageType takes 2 or more values (VM 2-n): write a list"),
        diag(text, "[0.5", f"{base}.PixelSpacing",
             "has 3 values; PixelSpacing takes exactly 2 values (VM 2)"),
    ]


def test_numbers_for_binary_vrs_and_items_of_lists(project):
    text = HEAD + ("force: true\nattributes:\n  Series:\n    1.2.3:\n      Instances:\n"
                   "        1.2.3.4:\n          Rows: '512'\n          Columns: 70000\n"
                   "          ImageType: [ORIGINAL, primary]\n")
    base = 'attributes.Series["1.2.3"].Instances["1.2.3.4"]'
    assert project.check(text) == [
        diag(text, "'512'", f"{base}.Rows", "must be a number (VR US), not a string"),
        diag(text, "70000", f"{base}.Columns", "is outside the range of VR US (0 to 65535)"),
        diag(text, "primary", f"{base}.ImageType[1]",
             "is not a valid CS value (upper-case letters, digits, space and underscore)"),
    ]


def test_sequences_are_validated_recursively(project):
    text = HEAD + ("force: true\nattributes:\n  Study:\n    ProcedureCodeSequence:\n"
                   "      - CodeValue: CTCH\n        CodeMeaning: CT chest\n"
                   "      - CodeValu: X\n        CodingSchemeDesignator: [A, B]\n"
                   "    ReferencedStudySequence: x\n")
    assert project.check(text) == [
        diag(text, "CodeValu:", "attributes.Study.ProcedureCodeSequence[1].CodeValu",
             "unknown DICOM keyword CodeValu; did you mean CodeValue?"),
        diag(text, "[A, B]", "attributes.Study.ProcedureCodeSequence[1].CodingSchemeDesignator",
             "has 2 values; CodingSchemeDesignator takes exactly 1 value (VM 1)"),
        diag(text, "x\n", "attributes.Study.ReferencedStudySequence",
             "a sequence (VR SQ) takes a list of items (mappings of keyword: value), or [] for "
             "none"),
    ]


def test_a_mapping_is_not_an_attribute_value(project):
    text = HEAD + "attributes:\n  Study:\n    StudyDescription: {a: 1}\n"
    assert project.check(text) == [diag(
        text, "{a", "attributes.Study.StudyDescription",
        "an attribute value is a string, a number, a list, or null (a mapping is only valid as "
        "a sequence item or as a private attribute's {vr, value})")]


# --------------------------------------------------------------------------------------------
# force
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attributes, needle, path, reason", [
    ("  Study:\n    StudyID: '18'\n", "StudyID", "attributes.Study.StudyID", "changing StudyID"),
    ("  Series:\n    1.2.3:\n      SeriesInstanceUID: 1.2.4\n", "SeriesInstanceUID",
     'attributes.Series["1.2.3"].SeriesInstanceUID', "changing SeriesInstanceUID"),
    ("  Series:\n    1.2.3:\n      Instances:\n        1.2.3.4:\n          SOPInstanceUID: 1.5\n",
     "SOPInstanceUID", 'attributes.Series["1.2.3"].Instances["1.2.3.4"].SOPInstanceUID',
     "changing SOPInstanceUID"),
    ("  Study:\n    ProcedureCodeSequence: []\n", "ProcedureCodeSequence",
     "attributes.Study.ProcedureCodeSequence", "changing a sequence (SQ)"),
    ("  Study:\n    NameOfPhysiciansReadingStudy: [A^B, C^D]\n", "NameOf",
     "attributes.Study.NameOfPhysiciansReadingStudy",
     "a value with several items (multi-valued)"),
    ("  Series:\n    1.2.3:\n      Instances:\n        1.2.3.4:\n"
     "          \"00091001\": {vr: LO, value: X}\n", '"0009',
     'attributes.Series["1.2.3"].Instances["1.2.3.4"].00091001', "changing a private attribute"),
    ("  Series:\n    1.2.3:\n      Instances:\n        1.2.3.4:\n          \"00091001\": null\n",
     '"0009', 'attributes.Series["1.2.3"].Instances["1.2.3.4"].00091001',
     "changing a private attribute"),
])
def test_changes_that_need_force(project, attributes, needle, path, reason):
    text = HEAD + "attributes:\n" + attributes
    assert project.check(text) == [diag(
        text, needle, path, f"{reason} needs force: true in the spec (HealthImaging refuses it "
                            "otherwise)")]
    assert project.check(HEAD + "force: true\nattributes:\n" + attributes) == []


def test_one_item_list_is_not_multi_valued(project):
    text = HEAD + "attributes:\n  Study:\n    NameOfPhysiciansReadingStudy: [A^B]\n"
    assert project.check(text) == []


def test_identity_uids_cannot_be_removed(project):
    text = HEAD + "force: true\nattributes:\n  Study:\n    StudyInstanceUID: null\n"
    assert project.check(text) == [diag(
        text, "StudyInstanceUID", "attributes.Study.StudyInstanceUID",
        "StudyInstanceUID cannot be removed: HealthImaging identifies the study by it")]


def test_force_is_refused_on_primary_image_sets(project):
    text = HEAD.replace(f"  imageSetId: {IMAGE_SET}\n", "") + (
        "  selector: {DICOMStudyInstanceUID: 1.2.3, isPrimary: true}\nforse: false\n"
        "force: true\nattributes:\n  Study:\n    StudyID: '18'\n").replace("forse: false\n", "")
    assert project.check(text) == [diag(
        text, "StudyID:", "attributes.Study.StudyID",
        "changing StudyID needs force, which HealthImaging does not allow on primary image sets "
        "(target.selector.isPrimary is true)")]


def test_force_without_need_warns(project):
    text = HEAD + "force: true\nattributes:\n  Study:\n    StudyDescription: CT\n"
    project.write("s.yaml", text)
    warnings: list = []
    project.load("s.yaml", warnings=warnings)
    assert [str(w) for w in warnings] == [diag(
        text, "force", "force", "force: true, but nothing in this spec needs it; without it "
                                "HealthImaging keeps checking the update")]


# --------------------------------------------------------------------------------------------
# Private tags
# --------------------------------------------------------------------------------------------
def test_private_tag_rules(project):
    text = HEAD + ("force: true\nattributes:\n"
                   "  Study:\n    \"00091002\": {vr: LO, value: X}\n"
                   "  Series:\n    1.2.3:\n      Instances:\n        1.2.3.4:\n"
                   "          \"00090010\": {vr: LO, value: CREATOR}\n"
                   "          \"00011001\": {vr: LO, value: X}\n"
                   "          \"00100010\": DOE^JANE\n"
                   "          \"00091003\": VENDOR\n"
                   "          \"00091004\": {vr: XX, value: X}\n"
                   "          \"00091005\": {vr: DA, value: 20240231}\n"
                   "          \"00091006\": {vr: LO, value: null}\n"
                   "          \"00091007\": {vr: LO}\n")
    base = 'attributes.Series["1.2.3"].Instances["1.2.3.4"]'
    form = "a private attribute is written {vr: <VR>, value: <value>}, or null to remove it"
    problems = project.check(text)
    assert problems == [
        diag(text, '"00091002"', "attributes.Study.00091002",
             "private attributes can only be declared on instances (HealthImaging keeps them at "
             "the Instance level: attributes.Series[<SeriesInstanceUID>].Instances"
             "[<SOPInstanceUID>])"),
        diag(text, '"00090010"', f"{base}.00090010",
             "(0009,0010) is a private creator element; only private data elements "
             "(gggg,1000-FFFF) can be managed"),
        diag(text, '"00011001"', f"{base}.00011001",
             "group 0001 is reserved by DICOM and cannot hold private attributes"),
        diag(text, '"00100010"', f"{base}.00100010",
             "standard attributes are keyed by keyword: write PatientName"),
        diag(text, "VENDOR", f"{base}.00091003", form),
        diag(text, "XX", f"{base}.00091004.vr", "must be one of: " + ", ".join(
            __import__("reconciler.dicom.valuerep").dicom.valuerep.PRIVATE_VRS)),
        diag(text, "20240231", f"{base}.00091005.value", "is not a calendar date"),
        diag(text, "null}", f"{base}.00091006.value",
             'write "00091006": null to remove a private attribute; value: null is not a value'),
        diag(text, "{vr: LO}", f"{base}.00091007", form),
    ]


def test_private_tags_are_normalised_to_upper_case(project):
    text = HEAD + ("force: true\nattributes:\n  Series:\n    1.2.3:\n      Instances:\n"
                   "        1.2.3.4:\n          0019100a: {vr: DS, value: 97}\n"
                   "          0019100A: {vr: DS, value: 98}\n")
    assert project.check(text) == [diag(
        text, "0019100A", 'attributes.Series["1.2.3"].Instances["1.2.3.4"].0019100A',
        "the same private tag is declared twice")]


# --------------------------------------------------------------------------------------------
# Duplicates and syntax, through the loader
# --------------------------------------------------------------------------------------------
def test_duplicate_attribute_key(project):
    text = HEAD + "attributes:\n  Study:\n    StudyDescription: A\n    StudyDescription: B\n"
    line, _ = at(text, "StudyDescription: A")
    assert project.check(text) == [diag(
        text, "StudyDescription", "attributes.Study.StudyDescription",
        f"duplicate key (first defined at line {line})", occurrence=2)]


def test_yaml_syntax_error_in_a_spec(project):
    text = HEAD + "attributes:\n  Study:\n    StudyDescription: [CT\n"
    problems = project.check(text)
    assert len(problems) == 1 and problems[0].startswith(f"s.yaml:{text.count(chr(10)) + 1}:1: "
                                                         "YAML syntax error:")


def test_include_study_image_sets_without_patient_or_study_attributes_warns(project):
    text = HEAD + ("includeStudyImageSets: true\nattributes:\n  Series:\n"
                   "    1.2.3: {SeriesDescription: X}\n")
    project.write("s.yaml", text)
    warnings: list = []
    project.load("s.yaml", warnings=warnings)
    assert [str(w) for w in warnings] == [diag(
        text, "includeStudyImageSets", "includeStudyImageSets",
        "includeStudyImageSets: true, but this spec declares no Patient or Study attribute")]
