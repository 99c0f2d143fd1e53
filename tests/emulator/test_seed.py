"""Seeding: real DICOM read with pydicom, in the shape of AWS's real metadata document."""

from __future__ import annotations

import base64
import json
import re
import struct

import pydicom
import pytest
from emulator_support import EXAMPLES_DICOM, SAMPLE_METADATA, Api
from pydicom.datadict import dictionary_VM

from reconciler.data import service_facts
from reconciler.emulator.server import OptionsError, ThreadedEmulator

NUMBER_VRS = set("US SS UL SL UV SV FL FD".split())
BINARY_VRS = set("OB OW OD OF OL OV UN".split())


@pytest.fixture(scope="module")
def seeded():
    """{SOPInstanceUID: (dataset, instance node, whole document)} for examples/dicom."""
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)]) as emu:
        api = Api(emu)
        docs = [api.meta(i) for i in emu.image_set_ids]
    out = {}
    for path in sorted(EXAMPLES_DICOM.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for doc in docs:
            for series in doc["Study"]["Series"].values():
                node = series["Instances"].get(str(ds.SOPInstanceUID))
                if node is not None:
                    out[path.name] = (ds, node, doc, series)
    assert len(out) == 8
    return out


def _expected(elem):
    """The service's JSON form, written independently of the emulator's code."""
    if elem.keyword == "PixelData":
        return None
    if elem.VR == "SQ":
        return [{(e.keyword if e.keyword and not e.tag.is_private else f"{int(e.tag):08X}"):
                 _expected(e) for e in item if e.tag.element != 0} for item in elem.value] or None
    if elem.VR in BINARY_VRS:
        return base64.b64encode(elem.value).decode() if elem.value else None
    if elem.value in (None, "") or (hasattr(elem.value, "__len__") and len(elem.value) == 0
                                    and not isinstance(elem.value, str)):
        return None
    if elem.VR in NUMBER_VRS:
        convert = lambda v: v  # noqa: E731
    elif elem.VR == "AT":
        convert = lambda v: f"{int(v):08X}"  # noqa: E731 - a tag, as 8 hex digits
    else:
        convert = str
    if elem.VM > 1:
        return [convert(v) for v in elem.value]
    value = convert(elem.value)
    known = elem.keyword and not elem.tag.is_private
    return [value] if known and dictionary_VM(elem.tag) != "1" else value


def test_every_element_has_pydicom_value_at_its_level(seeded):
    # Patient/Study/Series values come from the study's first file (in path order): the NM
    # files disagree on InstitutionName, and the first one wins (see the README).
    level_of = service_facts.level_of_keyword()
    first_of_study = {}
    for name, (ds, _, _, _) in sorted(seeded.items()):
        first_of_study.setdefault(str(ds.StudyInstanceUID), name)
    for name, (ds, node, doc, series) in seeded.items():
        first = first_of_study[str(ds.StudyInstanceUID)] == name
        nodes = {"Patient": doc["Patient"]["DICOM"], "Study": doc["Study"]["DICOM"],
                 "Series": series["DICOM"], "Instance": node["DICOM"]}
        for elem in list(ds.file_meta) + list(ds):
            if elem.tag.element == 0:
                continue
            key = elem.keyword if elem.keyword and not elem.tag.is_private \
                else f"{int(elem.tag):08X}"
            level = level_of.get(key, "Instance")
            if level != "Instance" and not first:
                continue
            assert key in nodes[level], (name, key)
            assert nodes[level][key] == _expected(elem), (name, key)
            if key != elem.keyword:
                assert node["DICOMVRs"][key] == elem.VR, (name, key)
        for level, dicom in nodes.items():
            for key in dicom:
                assert level_of.get(key, "Instance") == level, (name, key)


def test_specific_values(seeded):
    ds, node, doc, series = seeded["CT_small.dcm"]
    assert doc["Patient"]["DICOM"]["PatientName"] == "CompressedSamples^CT1"
    assert series["DICOM"]["SeriesNumber"] == "1" == str(ds.SeriesNumber)
    assert series["DICOM"]["SoftwareVersions"] == ["05"]             # VM 1-n: an array
    dicom = node["DICOM"]
    assert dicom["Rows"] == 128 and dicom["BitsAllocated"] == 16
    assert dicom["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert dicom["PixelData"] is None
    assert dicom["FileMetaInformationVersion"] == "AAE="
    assert dicom["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert dicom["00091001"] == "GE_GENESIS_FF" and node["DICOMVRs"]["00091001"] == "LO"
    assert dicom["00091027"] == 862399669 and node["DICOMVRs"]["00091027"] == "SL"
    assert doc["Patient"]["DICOM"]["OtherPatientIDsSequence"] == [
        {"PatientID": "ABCD1234", "TypeOfPatientID": "TEXT"},
        {"PatientID": "1234ABCD", "TypeOfPatientID": "TEXT"}]
    assert doc["Study"]["DICOM"]["AccessionNumber"] is None           # empty → null
    _, rt, rtdoc, _ = seeded["rtplan.dcm"]
    assert rt["ImageFrames"] == []
    assert isinstance(rt["DICOM"]["BeamSequence"][0]["ControlPointSequence"], list)


def test_image_frames(seeded):
    ds, node, _, _ = seeded["CT_small.dcm"]
    [frame] = node["ImageFrames"]
    pixels = struct.unpack(f"<{128 * 128}h", ds.PixelData)
    assert (frame["MinPixelValue"], frame["MaxPixelValue"]) == (min(pixels), max(pixels))
    assert frame["FrameSizeInBytes"] == 128 * 128 * 2
    assert re.fullmatch(r"[0-9a-z]{32}", frame["ID"])
    assert frame["PixelDataChecksumFromBaseToFullResolution"][-1]["Width"] == 128
    ids = {f["ID"] for _, (_, n, _, _) in seeded.items() for f in n["ImageFrames"]}
    assert len(ids) == 7                                              # unique across instances
    _, rgb, _, _ = seeded["SC_rgb_1.dcm"]
    assert rgb["ImageFrames"][0]["FrameSizeInBytes"] == 100 * 100 * 3
    assert rgb["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.4.50"   # lossy: kept as is
    assert node["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.4.202"  # lossless: HTJ2K


def test_resolution_levels_follow_the_sample():
    from reconciler.emulator.dicom_seed import _levels

    sample = json.loads(SAMPLE_METADATA.read_text())
    node = next(iter(next(iter(sample["Study"]["Series"].values()))["Instances"].values()))
    levels = [(c["Width"], c["Height"])
              for c in node["ImageFrames"][0]["PixelDataChecksumFromBaseToFullResolution"]]
    assert _levels(2040, 2570) == levels


def _shape(value):
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def test_document_shape_matches_the_aws_sample(seeded):
    sample = json.loads(SAMPLE_METADATA.read_text())
    s_series = next(iter(sample["Study"]["Series"].values()))
    s_instance = next(iter(s_series["Instances"].values()))
    s_frame = s_instance["ImageFrames"][0]
    for _, (_, node, doc, series) in seeded.items():
        assert list(doc) == list(sample)                              # same keys, same order
        assert doc["SchemaVersion"] == "1.1" and re.fullmatch(r"[0-9a-z]{32}", doc["ImageSetID"])
        assert set(doc["Patient"]) == set(sample["Patient"]) == {"DICOM"}
        assert set(doc["Study"]) == set(sample["Study"])
        assert set(series) == set(s_series)
        assert set(s_instance) <= set(node)
        for frame in node["ImageFrames"]:
            assert {k: _shape(v) for k, v in frame.items()} == \
                {k: _shape(v) for k, v in s_frame.items()}
    # Value types per VR agree with the sample wherever the same keyword appears.
    sample_values = {**sample["Patient"]["DICOM"], **sample["Study"]["DICOM"],
                     **s_series["DICOM"], **s_instance["DICOM"]}
    compared = 0
    for _, (_, node, doc, series) in seeded.items():
        mine = {**doc["Patient"]["DICOM"], **doc["Study"]["DICOM"], **series["DICOM"],
                **node["DICOM"]}
        for key, value in mine.items():
            theirs = sample_values.get(key)
            if theirs is not None and value is not None and not key[0].isdigit():
                assert _shape(value) == _shape(theirs), key
                compared += 1
    assert compared > 100


def test_seed_from_a_metadata_json_document():
    sample = json.loads(SAMPLE_METADATA.read_text())
    with ThreadedEmulator(seeds=[str(SAMPLE_METADATA)]) as emu:
        api = Api(emu)
        assert emu.image_set_ids == [sample["ImageSetID"]]
        doc = api.meta(sample["ImageSetID"])
    assert doc["DatastoreID"] == emu.datastore_id
    assert {k: v for k, v in doc.items() if k != "DatastoreID"} == \
        {k: v for k, v in sample.items() if k != "DatastoreID"}


def test_ids_are_deterministic_and_seeding_is_idempotent():
    first = ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)])
    second = ThreadedEmulator(seeds=[str(EXAMPLES_DICOM / "CT_small.dcm"), str(EXAMPLES_DICOM)])
    assert first.datastore_id == second.datastore_id
    assert sorted(first.image_set_ids) == sorted(set(second.image_set_ids))
    assert len(first.image_set_ids) == 5                               # one per study
    assert all(re.fullmatch(r"[0-9a-z]{32}", i) for i in first.image_set_ids)
    assert len(first.backend.image_sets) == 5 and len(second.backend.image_sets) == 5


def test_storage_keys_behaviour():
    emu = ThreadedEmulator(seeds=[str(EXAMPLES_DICOM / "CT_small.dcm")],
                           behaviours={"instance_storage_keys": "off"})
    doc = emu.backend.metadata(emu.image_set_ids[0])
    node = next(iter(next(iter(doc["Study"]["Series"].values()))["Instances"].values()))
    assert "StoredTransferSyntaxUID" not in node and "ChecksumType" not in node


def test_bad_seed_paths(tmp_path):
    with pytest.raises(OptionsError, match="not found"):
        ThreadedEmulator(seeds=[str(tmp_path / "missing")])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(OptionsError, match="not a HealthImaging metadata document"):
        ThreadedEmulator(seeds=[str(bad)])
    (tmp_path / "notes.txt").write_text("not dicom")
    assert ThreadedEmulator(seeds=[str(tmp_path / "notes.txt")]).image_set_ids == []
