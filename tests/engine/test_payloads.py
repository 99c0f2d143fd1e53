"""Changes → request documents: shapes from docs/service-notes.md#update-payloads, one
request, the blob limit, and a property: applying the payloads gives the declared state and
touches nothing else."""

import copy
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.engine.diff import dicom_equal, diff
from reconciler.engine.payloads import BLOB_LIMIT, build_requests, size

from .helpers import apply_request, desired

SAMPLE = json.loads((Path(__file__).parents[1] / "data" / "aws-sample-metadata.json").read_text())
SERIES = "1.3.51.5145.15142.20010109.1105752"
SOP = "1.3.51.5145.5142.20010109.1105752.1.0.1"


def test_one_request_with_both_documents_and_current_values_for_removals():
    changes = diff(desired(patient={"PatientName": "DOE^JANE"},
                           study={"StudyDescription": None},
                           series={SERIES: {"Instances": {SOP: {"00191099": {"vr": "LO",
                                                                             "value": "X"}}}}}),
                   SAMPLE)
    [request] = build_requests(changes, force=True)
    assert json.loads(request.updatable) == {
        "SchemaVersion": 1.1,
        "Patient": {"DICOM": {"PatientName": "DOE^JANE"}},
        "Study": {"Series": {SERIES: {"Instances": {SOP: {"DICOM": {"00191099": "X"},
                                                          "DICOMVRs": {"00191099": "LO"}}}}}}}
    assert json.loads(request.removable) == {"SchemaVersion": 1.1,
                                             "Study": {"DICOM": {"StudyDescription": "pelvis"}}}
    assert request.force  # the private tag needs it and the spec allows it
    assert not request.include_study_image_sets


def test_force_only_when_the_spec_allows_and_a_change_needs_it():
    changes = diff(desired(patient={"PatientName": "DOE^JANE"}), SAMPLE)
    assert not build_requests(changes, force=True)[0].force
    forced = diff(desired(study={"StudyID": "9"}), SAMPLE)
    assert build_requests(forced, force=True)[0].force
    assert not build_requests(forced, force=False)[0].force


def test_series_and_instance_removal_payloads():
    [request] = build_requests(diff(desired(series={SERIES: {"Instances": {SOP: None}}}), SAMPLE))
    assert json.loads(request.removable) == {
        "SchemaVersion": 1.1, "Study": {"Series": {SERIES: {"Instances": {SOP: {}}}}}}
    assert request.updatable is None
    [whole] = build_requests(diff(desired(series={SERIES: None}), SAMPLE))
    assert json.loads(whole.removable) == {"SchemaVersion": 1.1, "Study": {"Series": {SERIES: {}}}}


def test_no_changes_no_requests():
    assert build_requests([]) == []


def test_split_only_when_a_document_exceeds_the_limit():
    many = {f"0019{0x1100 + i:04X}": {"vr": "LT", "value": "x" * 900} for i in range(60)}
    changes = diff(desired(series={SERIES: {"Instances": {SOP: many}}}), SAMPLE)
    requests = build_requests(changes, force=True)
    assert len(requests) == 2
    assert all(size(r.updatable) <= BLOB_LIMIT for r in requests)
    keys = [k for r in requests for k in
            json.loads(r.updatable)["Study"]["Series"][SERIES]["Instances"][SOP]["DICOM"]]
    assert sorted(keys) == sorted(many)
    small = build_requests(changes[:5], force=True)
    assert len(small) == 1


# -- property: payloads applied by an independent applier reach the spec ----------------------
TEXT = st.text(alphabet="ABCDEFGHIJ^ 0123456789", min_size=0, max_size=12)
KEYS = {"Patient": ["PatientName", "PatientID", "PatientSex", "PatientBirthDate",
                    "PatientComments"],
        "Study": ["StudyDescription", "AccessionNumber", "StudyID", "ReferringPhysicianName",
                  "StudyTime"],
        "Series": ["SeriesDescription", "Laterality", "StationName", "OperatorsName"],
        "Instance": ["ImageComments", "DerivationDescription", "PlateID", "00191010", "00191020"]}


def _value(key):
    if key.startswith("0019"):
        return st.builds(lambda v: {"vr": "LO", "value": v}, TEXT)
    return TEXT


def _level(keys):
    return st.dictionaries(st.sampled_from(keys), st.none(), max_size=len(keys)).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {k: st.one_of(st.none(), _value(k)) for k in chosen}))


@st.composite
def specs(draw):
    instance = draw(st.one_of(st.none(), _level(KEYS["Instance"])))
    series = draw(_level(KEYS["Series"]))
    if instance is not None or draw(st.booleans()):
        series["Instances"] = {SOP: instance}
    series_entry = {SERIES: None} if draw(st.integers(0, 9)) == 0 else {SERIES: series}
    return desired(patient=draw(_level(KEYS["Patient"])), study=draw(_level(KEYS["Study"])),
                   series=series_entry)


def _managed_value_ok(live_node, attr):
    if attr.absent:
        return attr.key not in live_node
    return attr.key in live_node and dicom_equal(live_node[attr.key], attr.value, attr.vr)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wanted=specs(), limit=st.sampled_from([BLOB_LIMIT, 260]))
def test_payloads_reach_the_spec_and_touch_nothing_else(wanted, limit):
    original = copy.deepcopy(SAMPLE)
    changes = diff(wanted, SAMPLE)
    live = SAMPLE
    for request in build_requests(changes, force=True, limit=limit):
        assert request.updatable is None or size(request.updatable) <= limit
        live = apply_request(live, request.updatable, request.removable)
    assert SAMPLE == original
    # managed attributes now equal the spec
    for attr in wanted.patient.values():
        assert _managed_value_ok(live["Patient"]["DICOM"], attr)
    for attr in wanted.study.values():
        assert _managed_value_ok(live["Study"]["DICOM"], attr)
    series_spec = wanted.series[SERIES]
    if series_spec.absent:
        assert SERIES not in live["Study"]["Series"]
    else:
        lseries = live["Study"]["Series"][SERIES]
        for attr in series_spec.attributes.values():
            assert _managed_value_ok(lseries["DICOM"], attr)
        for sop, ispec in series_spec.instances.items():
            if ispec.absent:
                assert sop not in lseries["Instances"]
            else:
                for attr in ispec.attributes.values():
                    assert _managed_value_ok(lseries["Instances"][sop]["DICOM"], attr)
    # every unmanaged attribute is untouched
    managed = set(wanted.managed_paths())
    def walk(doc, base=""):
        for level in ("Patient", "Study"):
            for key, value in doc.get(level, {}).get("DICOM", {}).items():
                yield f"{level}.{key}", value
        for suid, s in doc["Study"].get("Series", {}).items():
            for key, value in s.get("DICOM", {}).items():
                yield f"Series[{suid}].{key}", value
            for sop, inst in s.get("Instances", {}).items():
                for key, value in inst.get("DICOM", {}).items():
                    yield f"Series[{suid}].Instances[{sop}].{key}", value
    after = dict(walk(live))
    for path, value in walk(original):
        owned = path in managed or any(path.startswith(m + ".") for m in managed)
        if not owned:
            assert after.get(path, "<gone>") == value, path
    # planning the result again gives no change
    assert diff(wanted, live) == []
