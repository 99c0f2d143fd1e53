"""DICOM value checks and the conversion to HealthImaging's JSON value form (reconciler.dicom.valuerep)."""

from __future__ import annotations

import pytest

from reconciler.dicom import dictionary, valuerep
from reconciler.dicom.valuerep import check_text, convert


@pytest.mark.parametrize("vr, value", [
    ("DA", "20240229"), ("DA", ""), ("DT", "2024"), ("DT", "20240229123000.5+0100"),
    ("DT", "20240101120000-1200"), ("TM", "1015"), ("TM", "101500.123456"), ("TM", "235960"),
    ("UI", "1.2.826.0.1.3680043.8.498.1"), ("UI", "0.1.0"), ("PN", "DOE^JANE^M^DR^III"),
    ("PN", "YAMADA^TARO=山田^太郎=やまだ^たろう"), ("CS", "ORIGINAL"),
    ("CS", "AXIAL_2 B"),
    ("AS", "045Y"), ("IS", "-2147483648"), ("IS", " 12 "), ("DS", "5.0"), ("DS", "-1.5e3"),
    ("DS", "6.83760684E-01"), ("LO", "x" * 64), ("SH", "ACC123"), ("AE", "STORESCP"),
    ("LT", "line one\nline two\\with backslash"), ("UT", "x" * 20_000), ("UC", "unlimited"),
    ("UR", "http://example.com/a?b=c"), ("AT", "00100010"),
])
def test_valid_values(vr, value):
    assert check_text(vr, value) is None


@pytest.mark.parametrize("vr, value, message", [
    ("DA", "20240231", "is not a calendar date"),
    ("DA", "20230229", "is not a calendar date"),
    ("DA", "20241301", "is not a valid DA value (YYYYMMDD)"),
    ("DA", "2024-01-05", "is not a valid DA value (YYYYMMDD)"),
    ("DA", "20240101-", "is not a single date (YYYYMMDD; ranges are for queries)"),
    ("DA", "20240101-20240131", "is not a single date (YYYYMMDD; ranges are for queries)"),
    ("DT", "202402311230", "is not a calendar date and time"),
    ("DT", "2024.5", "is not a valid DT value (YYYYMMDDHHMMSS.FFFFFF&ZZXX)"),
    ("DT", "20240101-20240102",
     "is not a single date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX; ranges are for queries)"),
    ("DT", "20240101120000+1500", "has a UTC offset outside -1200..+1400"),
    ("DT", "20240101120000-1300", "has a UTC offset outside -1200..+1400"),
    ("TM", "2460", "is not a valid TM value (HHMMSS.FFFFFF)"),
    ("TM", "10:15:00", "is not a valid TM value (HHMMSS.FFFFFF)"),
    ("TM", "1015-1030", "is not a single time (HHMMSS.FFFFFF; ranges are for queries)"),
    ("UI", "1.02.3", "is not a valid UI value (digits and dots, no leading zeros in a component)"),
    ("UI", "1.2.3.", "is not a valid UI value (digits and dots, no leading zeros in a component)"),
    ("UI", "1." + "2" * 63, "is 65 characters long; VR UI allows at most 64"),
    ("PN", "A^B^C^D^E^F", "has more than 5 name components "
                          "(family^given^middle^prefix^suffix) in a component group"),
    ("PN", "A=B=C=D", "has more than 3 component groups or a group longer than 64 characters"),
    ("PN", "X" * 65, "has more than 3 component groups or a group longer than 64 characters"),
    ("CS", "axial", "is not a valid CS value (upper-case letters, digits, space and underscore)"),
    ("CS", "X" * 17, "is 17 characters long; VR CS allows at most 16"),
    ("AS", "45Y", "is not a valid AS value (nnnD, nnnW, nnnM or nnnY, e.g. 045Y)"),
    ("IS", "1.5", "is not a valid IS value (an integer)"),
    ("IS", "2147483648", "is outside the range of VR IS (a signed 32-bit integer)"),
    ("DS", "five", "is not a valid DS value (a decimal number such as 5.0 or -1.5e3)"),
    ("DS", "1.23456789012345678", "is 19 characters long; VR DS allows at most 16"),
    ("LO", "x" * 65, "is 65 characters long; VR LO allows at most 64"),
    ("SH", "x" * 17, "is 17 characters long; VR SH allows at most 16"),
    ("LO", "A\\B",
     "contains a backslash, the DICOM value separator; write several values as a list"),
    ("LO", "tab\there", "contains control characters, which VR LO does not allow"),
    ("LT", "bell\x07", "contains control characters, which VR LT does not allow"),
    ("AT", "0010001", "is not a valid AT value (a tag as 8 hex digits, e.g. 00100010)"),
])
def test_invalid_values(vr, value, message):
    assert check_text(vr, value) == message


def test_messages_never_quote_the_value():
    for vr, value in [("DA", "19700231"), ("PN", "SECRET^NAME^A^B^C^D"), ("CS", "secret"),
                      ("UI", "1.02.999"), ("DS", "secret")]:
        message = check_text(vr, value)
        assert message and value not in message and "secret" not in message.lower()


def test_string_vrs_take_the_source_text_of_yaml_numbers():
    texts = {(): "20240105"}
    assert convert("DA", 20240105, text_of=texts.get) == ("20240105", [])
    assert convert("DS", 5.0, text_of={(): "5.0"}.get) == ("5.0", [])
    assert convert("IS", 2, text_of={(): "2"}.get) == ("2", [])
    assert convert("CS", True, text_of={(): "YES"}.get) == ("YES", [])
    assert convert("SH", 15, text_of={(): "0017"}.get) == ("0017", [])
    # without source text (not a plain scalar), the number's own text
    assert convert("IS", 7) == ("7", [])


def test_binary_numeric_vrs_become_numbers():
    assert convert("US", 512) == (512, [])
    assert convert("FD", 1.5) == (1.5, [])
    assert convert("FL", 3) == (3, [])
    assert convert("US or SS", -5) == (-5, [])
    value, problems = convert("US", "512")
    assert value is None and problems[0].message == "must be a number (VR US), not a string"
    assert convert("US", True)[1][0].message == "must be a number (VR US), not a boolean"
    assert convert("US", 70000)[1][0].message == "is outside the range of VR US (0 to 65535)"
    assert convert("UL", 1.5)[1][0].message == "must be an integer (VR UL)"
    assert convert("FD", float("nan"))[1][0].message.startswith("must be a finite number")
    assert convert("FL", 1e39)[1][0].message == "is outside the range of VR FL"


def test_bulk_vrs_are_base64():
    assert convert("OB", "AAE=") == ("AAE=", [])
    assert convert("OB or OW", "AAE=") == ("AAE=", [])
    assert convert("OW", "AAE")[1][0].message.startswith("is not valid base64")
    assert convert("OW", "AA==")[1][0].message == "decodes to 1 bytes; VR OW needs a multiple of 2"
    assert convert("OB", ["AA==", "AA=="])[1][0].message == "VR OB takes a single base64 value"


def test_lists_are_multiple_values_checked_against_the_vm():
    assert convert("CS", ["ORIGINAL", "PRIMARY"], vm="2-n") == (["ORIGINAL", "PRIMARY"], [])
    assert convert("DS", [0.7, 0.7], vm="2", text_of={(0,): "0.7", (1,): "0.70"}.get) == \
        (["0.7", "0.70"], [])
    assert convert("LO", ["only"], vm="1") == ("only", [])      # one value is a scalar
    problems = convert("LO", ["a", "b"], vm="1", keyword="StudyDescription")[1]
    assert [p.message for p in problems] == [
        "has 2 values; StudyDescription takes exactly 1 value (VM 1)"]
    problems = convert("CS", "ORIGINAL", vm="2-n", keyword="ImageType")[1]
    assert [p.message for p in problems] == [
        "has 1 value; ImageType takes 2 or more values (VM 2-n): write a list"]
    problems = convert("FL", [1, 2, 3], vm="2-2n", keyword="X")[1]
    assert problems[0].message == "has 3 values; X takes a multiple of 2 values (VM 2-2n)"
    problems = convert("DA", ["20240101", "20240231"], vm="1-n")[1]
    assert [(p.path, p.message) for p in problems] == [((1,), "is not a calendar date")]
    assert convert("LO", [], vm="1-n")[1][0].message.startswith("an empty list is not a value")
    assert convert("LO", ["a", None], vm="1-n") == (["a", None], [])
    assert convert("LO", "", vm="2-n") == ("", [])              # empty is always allowed


def test_sequences_are_lists_of_keyword_items_checked_recursively():
    raw = [{"CodeValue": "CTCH", "CodingSchemeDesignator": "L", "CodeMeaning": "CT chest"},
           {"CodeValue": 17, "PatientsName": "x", "00091001": "y", "CodeMeaning": "20240231"}]
    value, problems = convert("SQ", raw, text_of={(1, "CodeValue"): "0017"}.get)
    assert value == [raw[0], {"CodeValue": "0017", "CodeMeaning": "20240231"}]
    assert [(p.path, p.message, p.at_key) for p in problems] == [
        ((1, "PatientsName"), "unknown DICOM keyword PatientsName; did you mean PatientName?",
         True),
        ((1, "00091001"), "private or tag-keyed attributes are not supported inside sequence "
                          "items", True),
    ]
    nested = [{"ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.02"}]}]
    problems = convert("SQ", nested)[1]
    assert [(p.path, p.message) for p in problems] == [
        ((0, "ReferencedSeriesSequence", 0, "SeriesInstanceUID"),
         "is not a valid UI value (digits and dots, no leading zeros in a component)")]
    assert convert("SQ", [])[0] == []
    assert convert("SQ", "x")[1][0].message.startswith("a sequence (VR SQ) takes a list")
    assert convert("SQ", ["x"])[1][0].message.startswith("a sequence item must be a mapping")


def test_import_length_limits_are_a_second_layer():
    problems = convert("IS", "2000000", keyword="NumberOfStudyRelatedSeries")[1]
    assert [p.message for p in problems] == ["exceeds HealthImaging's maximum of 1000000"]


def test_dictionary_helpers():
    assert dictionary.vr_for("PatientName") == "PN"
    assert dictionary.vr_for("PixelPaddingValue") == "US"          # "US or SS": the first choice
    assert dictionary.vr_choices("PixelPaddingValue") == ("US", "SS")
    assert dictionary.vr_for("NoSuchKeyword") is None and dictionary.vr_for("00091001") is None
    assert dictionary.vm_for("ImageType") == "2-n"
    assert dictionary.is_private_tag("00091001") and dictionary.is_private_tag("0019100a")
    assert not dictionary.is_private_tag("00100010") and not dictionary.is_private_tag("PatientName")
    assert dictionary.suggest_keyword("PatientsName") == "PatientName"
    assert dictionary.suggest_keyword("studydescription") == "StudyDescription"
    assert dictionary.suggest_keyword("Zzzzqqq") is None
    assert dictionary.is_retired("StudyComments") and not dictionary.is_retired("PatientName")
    assert valuerep.effective_vr("US or SS", -4) == "SS"
    assert valuerep.effective_vr("US or SS", [1, 2]) == "US"
    assert valuerep.effective_vr("OB or OW", "AA==") == "OB"


@pytest.mark.parametrize("vm, count, ok", [
    ("1", 1, True), ("1", 2, False), ("1-n", 5, True), ("2-n", 1, False), ("1-3", 3, True),
    ("1-3", 4, False), ("2-2n", 4, True), ("2-2n", 3, False), ("3-3n", 6, True),
    ("16", 16, True), ("weird", 3, True),
])
def test_vm_allows(vm, count, ok):
    assert valuerep.vm_allows(vm, count) is ok


def test_private_tag_rules():
    assert dictionary.private_tag_problem("00091001") is None
    assert "private creator" in dictionary.private_tag_problem("00090010")
    assert "reserved by DICOM" in dictionary.private_tag_problem("00011001")
    assert "not a private data element" in dictionary.private_tag_problem("00090005")
    assert dictionary.standard_tag_problem("00100010") == \
        "standard attributes are keyed by keyword: write PatientName"
    assert dictionary.standard_tag_problem("00091001") is None


def test_a_final_newline_is_not_part_of_a_date_time_or_a_tag():
    """``$`` matches before a final newline: these checks use fullmatch (YAML's ``|`` block
    scalars end in one)."""
    from reconciler.dicom.dictionary import is_tag

    assert check_text("DT", "20240101120000") is None
    assert check_text("DT", "20240101120000\n") is not None
    assert is_tag("0009100A") and not is_tag("0009100A\n")
