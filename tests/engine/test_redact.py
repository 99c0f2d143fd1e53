"""Redaction of values in output: which attributes, the marker's form, and when it is on."""

import re

from reconciler.dicom.redact import Redactor, is_sensitive, profile_keywords, redaction_enabled


def test_basic_profile_attributes_and_private_tags_are_sensitive():
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                    "StudyDescription", "ReferringPhysicianName", "StudyInstanceUID",
                    "InstitutionName", "OverlayData"):
        assert keyword in profile_keywords(), keyword
    for keyword in ("Modality", "SeriesNumber", "Rows", "BitsAllocated"):
        assert not is_sensitive(keyword), keyword
    assert is_sensitive("00191010", private=True)


def test_marker_form_and_equal_values_hash_equal_within_one_redactor():
    redactor = Redactor(True)
    marker = redactor.show("PatientName", "DOE^JANE", "PN")
    assert re.fullmatch(r"<redacted PN len=8 sha256:[0-9a-f]{6}>", marker)
    assert "DOE" not in marker
    assert redactor.show("PatientName", "DOE^JANE", "PN") == marker
    assert redactor.show("PatientName", "DOE^JOHN", "PN") != marker
    assert redactor.show("ImageType", ["ORIGINAL", "PRIMARY"], "CS") == ["ORIGINAL", "PRIMARY"]
    assert redactor.show("OtherPatientIDsSequence", [{"PatientID": "X"}], "SQ").startswith(
        "<redacted SQ items=1 ")
    assert redactor.show("PatientName", None, "PN") is None  # nothing to hide
    assert Redactor(False).show("PatientName", "DOE^JANE", "PN") == "DOE^JANE"
    # the hash is keyed: another key (another run, another state) gives another hash
    assert Redactor(True, key=b"a").digest("DOE^JANE") != Redactor(True, key=b"b").digest("DOE^JANE")


def test_when_redaction_is_on():
    assert redaction_enabled(None, "auto", {"CI": "true"})
    assert not redaction_enabled(None, "auto", {})
    assert not redaction_enabled(None, "auto", {"CI": "false"})
    assert redaction_enabled(None, "always", {})
    assert not redaction_enabled(None, "never", {"CI": "1"})
    assert not redaction_enabled(False, "always", {"CI": "1"})
    assert redaction_enabled(True, "never", {})
