"""Properties of the pure update function (no HTTP): what every client relies on."""

from __future__ import annotations

import copy
import json

import pytest
from emulator_support import EXAMPLES_DICOM
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.emulator.behaviours import Behaviours
from reconciler.emulator.dicom_seed import load_seeds
from reconciler.emulator.updates import UpdateContext, apply_update

DOC = next(s.document for s in load_seeds([str(EXAMPLES_DICOM / "CT_small.dcm")]))
# Study-level LO/SH/LT attributes absent from the CT document (text VRs: any printable value).
STUDY_KEYS = ["RequestingService", "AdmissionID", "ReasonForVisit", "ServiceEpisodeID"]
TEXT = st.text(alphabet=st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1,
               max_size=16)
NO_FORCE = UpdateContext(force=False, is_primary=True)


def _doc(level_dicom: dict) -> dict:
    return {"SchemaVersion": 1.1, "Study": {"DICOM": level_dicom}}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(STUDY_KEYS), TEXT, min_size=1))
def test_add_then_remove_with_the_same_values_restores_the_document(values):
    frozen = json.dumps(DOC, sort_keys=True)
    added, problems = apply_update(DOC, _doc(values), None, NO_FORCE, Behaviours())
    assert problems == []
    assert json.dumps(DOC, sort_keys=True) == frozen              # input never mutated
    assert {k: added["Study"]["DICOM"][k] for k in values} == values
    restored, problems = apply_update(added, None, _doc(values), NO_FORCE, Behaviours())
    assert problems == [] and restored == DOC


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(STUDY_KEYS), TEXT, min_size=1), TEXT)
def test_one_request_replaces_a_value_removals_first(values, new):
    key = next(iter(values))
    added, _ = apply_update(DOC, _doc(values), None, NO_FORCE, Behaviours())
    replaced, problems = apply_update(added, _doc({key: new}), _doc({key: values[key]}),
                                      NO_FORCE, Behaviours())
    assert problems == [] and replaced["Study"]["DICOM"][key] == new


@settings(max_examples=40, deadline=None)
@given(TEXT)
def test_a_mismatching_removal_changes_nothing(value):
    current = DOC["Patient"]["DICOM"]["PatientName"]
    if value == current:
        return
    result, problems = apply_update(DOC, None, {"SchemaVersion": 1.1, "Patient": {"DICOM": {
        "PatientName": value}}}, NO_FORCE, Behaviours())
    assert problems and result["Patient"] == DOC["Patient"]


@pytest.mark.parametrize("force", [False, True])
def test_violations_are_collected_not_stopped_at(force):
    update = {"SchemaVersion": 1.1,
              "Patient": {"DICOM": {"StudyDescription": "x", "PixelData": None}},
              "Study": {"DICOM": {"PatientName": "A^B"}}}
    _, problems = apply_update(copy.deepcopy(DOC), update, None,
                               UpdateContext(force=force, is_primary=True), Behaviours())
    assert len(problems) == 3
