"""Finding spec files, loading valid specs into the model with the right value forms,
several documents per file, and the checks across specs (names, overlapping attributes)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from spec_helpers import CASES, DATASTORE, HEAD, IMAGE_SET, at

from reconciler.core.errors import SpecError
from reconciler.spec.config import Config, load_config
from reconciler.spec.loader import check_overlaps, discover, load_specs, spec_digest
from reconciler.spec.types import Position


def spec_text(name: str, attributes: str = "  Study: {StudyDescription: X}\n",
              image_set: str = IMAGE_SET) -> str:
    return HEAD.replace("name: case", f"name: {name}").replace(IMAGE_SET, image_set) + \
        "attributes:\n" + attributes


# --------------------------------------------------------------------------------------------
# Valid specs → model
# --------------------------------------------------------------------------------------------
@pytest.fixture
def valid_cases(tmp_path, monkeypatch):
    shutil.copytree(CASES / "valid", tmp_path / "valid")
    monkeypatch.chdir(tmp_path / "valid")
    return tmp_path / "valid"


def test_the_product_example_loads_with_service_value_forms(valid_cases):
    specs = load_specs(["ct-chest.yaml"], load_config(None))
    spec, = specs
    assert spec.name == "ct-chest-0042"
    assert spec.labels == {"team": "radiology", "ticket": "1234"}
    assert spec.force is True and spec.include_study_image_sets is False
    assert spec.target.datastore_id == DATASTORE and spec.target.image_set_id == IMAGE_SET
    assert spec.target.selector is None
    assert spec.position == Position("ct-chest.yaml", 3, 1)
    desired = spec.attributes
    assert {k: (a.value, a.vr) for k, a in desired.patient.items()} == {
        "PatientName": ("DOE^JANE", "PN"), "PatientBirthDate": ("19700101", "DA")}
    assert {k: (a.value, a.vr) for k, a in desired.study.items()} == {
        "StudyDescription": ("CT CHEST", "LO"), "AccessionNumber": (None, "SH"),
        "StudyDate": ("20240105", "DA"), "ReferringPhysicianName": ("", "PN")}
    assert desired.study["AccessionNumber"].absent
    assert desired.study["StudyDate"].position == Position("ct-chest.yaml", 19, 5)
    series = desired.series["1.2.826.0.1.3680043.8.498.1.1"]
    assert series.position == Position("ct-chest.yaml", 22, 5) and not series.absent
    assert series.attributes["SeriesNumber"].value == "2"
    instance = series.instances["1.2.826.0.1.3680043.8.498.1.1.1"]
    values = {k: a.value for k, a in instance.attributes.items()}
    assert values == {
        "ImageComments": "reviewed", "SliceThickness": "5.0",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "PixelSpacing": ["0.7", "0.70"],
        "Rows": 512, "BurnedInAnnotation": "NO",
        "AnatomicRegionSequence": [{"CodeValue": "51185008", "CodingSchemeDesignator": "SCT",
                                    "CodeMeaning": "Chest"}],
        "00091001": "VENDOR_Y", "0019100A": "97"}
    assert instance.attributes["00091001"].private and instance.attributes["00091001"].vr == "LO"
    assert instance.attributes["0019100A"].vr == "DS"
    assert instance.attributes["Rows"].vr == "US"
    assert series.instances["1.2.826.0.1.3680043.8.498.1.1.2"].absent
    assert desired.series["1.2.826.0.1.3680043.8.498.1.9"].absent
    assert "Series[1.2.826.0.1.3680043.8.498.1.9]" in desired.managed_paths()
    assert len(spec.digest) == 64 and spec.digest == spec_digest(spec)


def test_several_documents_and_the_config_default_data_store(valid_cases):
    specs = load_specs([], load_config(None))   # reconciler.yaml: specs ".", skipped itself
    assert [s.name for s in specs] == ["ct-chest-0042", "mr-knee-0001", "deid-study-17"]
    deid = specs[2]
    assert deid.position == Position("multi.yaml", 11, 1)
    assert deid.target.datastore_id == DATASTORE           # from reconciler.yaml
    assert deid.target.selector == {"DICOMStudyInstanceUID": "1.2.826.0.1.3680043.8.498.17",
                                    "isPrimary": False}
    assert deid.target.allow_empty and deid.include_study_image_sets
    assert {k: a.value for k, a in deid.attributes.patient.items()} == {
        "PatientIdentityRemoved": "YES", "PatientName": "ANON^17", "PatientBirthDate": None}


def test_digest_follows_meaning_not_formatting(project):
    # SpatialResolution is a Series-level DS: a string, taken as written
    project.write("a.yaml", spec_text("a", "  Series:\n    1.2.3: {SpatialResolution: 5.0}\n"))
    project.write("b.yaml", spec_text("a", "  Series:\n    1.2.3:\n"
                                           "      SpatialResolution: '5.0'\n"))
    project.write("c.yaml", spec_text("a", "  Series:\n    1.2.3: {SpatialResolution: 5.00}\n"))
    digests = [project.load(f)[0].digest for f in ("a.yaml", "b.yaml", "c.yaml")]
    assert digests[0] == digests[1] != digests[2]


def test_digest_is_sha256_of_the_canonical_json(project):
    project.write("a.yaml", spec_text("a"))
    spec, = project.load("a.yaml")
    canonical = {
        "apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
        "metadata": {"name": "a", "labels": {}},
        "target": {"datastoreId": DATASTORE, "imageSetId": IMAGE_SET, "selector": None,
                   "allowEmpty": False},
        "force": False, "includeStudyImageSets": False,
        "attributes": {"Patient": {}, "Study": {"StudyDescription": "X"}, "Series": {}}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    assert spec.digest == hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------
def test_directories_are_searched_recursively_skipping_hidden_ones(project):
    for name in ("specs/a.yaml", "specs/deep/b.yml", "specs/deep/c.YAML", "specs/.hidden/x.yaml",
                 ".github/workflows/ci.yml", "specs/.dotfile.yaml", ".reconciler/state.yaml"):
        project.write(name, "not: [a spec")
    project.write("specs/notes.txt", "x")
    files = discover([], load_config(None))
    assert [str(f) for f in files] == ["specs/a.yaml", "specs/deep/b.yml", "specs/deep/c.YAML"]
    assert [str(f) for f in discover(["specs/deep"], load_config(None))] == [
        "specs/deep/b.yml", "specs/deep/c.YAML"]


def test_an_explicit_file_is_a_spec_whatever_its_name(project):
    project.write(".hidden/odd.txt", spec_text("odd"))
    assert [s.name for s in project.load(".hidden/odd.txt")] == ["odd"]


def test_the_config_file_is_skipped_and_its_specs_are_the_default(project):
    project.write("reconciler.yaml", f"specs: [specs, extra/one.yaml]\ndatastoreId: {DATASTORE}\n")
    project.write("specs/a.yaml", spec_text("a"))
    project.write("extra/one.yaml", spec_text("one", image_set="1" * 32))
    project.write("other/ignored.yaml", "not: [a spec")
    project.write("specs/nested/reconciler.yaml", "a nested project's config, not a spec")
    assert [s.name for s in project.load()] == ["a", "one"]
    # the config's directory, not the cwd, anchors its paths
    (project.root / "sub").mkdir()
    import os
    os.chdir(project.root / "sub")
    config = load_config("../reconciler.yaml")
    assert [str(p) for p in config.specs] == ["../specs", "../extra/one.yaml"]
    assert [s.name for s in load_specs([], config)] == ["a", "one"]


def test_with_neither_paths_nor_config_the_cwd_is_searched(project):
    project.write("x/a.yaml", spec_text("a"))
    project.write("reconciler.yml", spec_text("b", image_set="2" * 32))  # not the config name
    assert sorted(s.name for s in project.load()) == ["a", "b"]


def test_the_same_file_named_twice_is_loaded_once(project):
    project.write("specs/a.yaml", spec_text("a"))
    assert [s.name for s in project.load("specs", "specs/a.yaml", "./specs/a.yaml")] == ["a"]


def test_nonexistent_path_is_a_diagnostic_and_others_are_still_checked(project):
    bad = spec_text("bad", "  Study: {StudyDate: 20240231}\n")
    project.write("bad.yaml", bad)
    line, column = at(bad, "20240231")
    assert project.problems("missing.yaml", "bad.yaml") == [
        "missing.yaml:1:1: no such file or directory",
        f"bad.yaml:{line}:{column}: attributes.Study.StudyDate: is not a calendar date",
    ]
    with pytest.raises(SpecError):
        discover(["missing.yaml"], load_config(None))


def test_a_broken_file_does_not_hide_problems_in_others(project):
    project.write("a.yaml", "a: [broken\n")
    project.write("b.yaml", "\x00\x01binary")
    project.write("c.yaml", spec_text("c", "  Study: {PatientName: X}\n"))
    project.write("d.yaml", spec_text("d", image_set="3" * 32))
    problems = project.problems(".")
    assert [p.split(":")[0] for p in problems] == ["a.yaml", "b.yaml", "c.yaml"]
    assert "YAML syntax error" in problems[0] and "NUL bytes" in problems[1]
    assert problems[2].endswith("PatientName belongs to the Patient level (declare it under "
                                "attributes.Patient)")


def test_empty_files_and_files_of_comments_are_fine(project):
    project.write("empty.yaml", "")
    project.write("comments.yaml", "# nothing yet\n---\n")
    assert project.load(".") == []


def test_diagnostics_are_sorted_by_file_then_line(project):
    b = spec_text("b", "  Study: {PatientName: X}\n") + "---\n" + \
        spec_text("b2", "  Patient: {StudyDate: '1'}\n", image_set="4" * 32)
    project.write("b.yaml", b)
    project.write("a.yaml", spec_text("a", "  Patient: {Bogus: 1}\n"))
    problems = project.problems(".")
    second = str(at(b, "StudyDate")[0])
    assert [p.split(":")[:2] for p in problems] == [["a.yaml", "9"], ["b.yaml", "9"],
                                                    ["b.yaml", second], ["b.yaml", second]]


# --------------------------------------------------------------------------------------------
# Across specs
# --------------------------------------------------------------------------------------------
def test_duplicate_names_are_reported_at_the_second_naming_the_first(project):
    project.write("a.yaml", spec_text("same"))
    second = spec_text("same", image_set="5" * 32)
    project.write("b.yaml", "# another\n" + second)
    assert project.problems("a.yaml", "b.yaml") == [
        "b.yaml:5:9: metadata.name: duplicate spec name same; first defined at a.yaml:4"]


def test_two_specs_managing_the_same_attribute_of_one_image_set(project):
    project.write("a.yaml", spec_text("a", "  Study: {StudyDescription: X, StudyDate: '20240101'}"
                                           "\n"))
    b = spec_text("b", "  Study:\n    StudyDate: '20240102'\n  Patient: {PatientName: X}\n")
    project.write("b.yaml", b)
    line, column = at(b, "StudyDate")
    assert project.problems("a.yaml", "b.yaml") == [
        f"b.yaml:{line}:{column}: attributes.Study.StudyDate: also managed by spec a at "
        f"a.yaml:9 (image set {IMAGE_SET})"]


def test_a_removed_series_overlaps_the_attributes_of_that_series(project):
    project.write("a.yaml", spec_text("a", "  Series:\n    1.2.3:\n      Instances:\n"
                                           "        1.2.3.4: {ImageComments: x}\n"))
    b = spec_text("b", "  Series:\n    1.2.3: null\n")
    project.write("b.yaml", b)
    assert project.problems("a.yaml", "b.yaml") == [
        f'b.yaml:{at(b, "1.2.3")[0]}:5: attributes.Series["1.2.3"]: also managed by spec a at '
        f"a.yaml:12 (image set {IMAGE_SET})"]


def test_different_image_sets_or_attributes_do_not_overlap(project):
    project.write("a.yaml", spec_text("a"))
    project.write("b.yaml", spec_text("b", image_set="6" * 32))
    project.write("c.yaml", spec_text("c", "  Study: {StudyDate: '20240101'}\n"))
    assert project.problems(".") == []


def test_check_overlaps_for_resolved_selectors(project):
    project.write("a.yaml", spec_text("a", "  Study: {StudyDescription: X}\n"))
    project.write("b.yaml", HEAD.replace("name: case", "name: b").replace(
        f"  imageSetId: {IMAGE_SET}\n", "  selector: {isPrimary: false}\n") +
        "attributes:\n  Study: {StudyDescription: Y}\n")
    a, b = project.load("a.yaml", "b.yaml")   # offline: b's targets are not known yet
    assert check_overlaps([(a, DATASTORE, IMAGE_SET), (b, DATASTORE, "7" * 32)]) == []
    problems = check_overlaps([(a, DATASTORE, IMAGE_SET), (b, DATASTORE, IMAGE_SET),
                               (b, DATASTORE, IMAGE_SET)])
    assert [str(p) for p in problems] == [
        f"b.yaml:9:11: attributes.Study.StudyDescription: also managed by spec a at a.yaml:9 "
        f"(image set {IMAGE_SET})"]


def test_invalid_specs_golden(tmp_path, monkeypatch):
    shutil.copy(CASES / "invalid" / "kitchen-sink.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        load_specs(["kitchen-sink.yaml"], Config())
    expected = (CASES / "invalid" / "kitchen-sink.expected").read_text().splitlines()
    assert [str(d) for d in info.value.diagnostics] == expected


def test_hostile_files_end_in_a_clean_spec_error(project):
    bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefgh"):
        bomb.append(f"{name}: &{name} [" + ", ".join(["*" + "abcdefgh"[i]] * 10) + "]")
    project.write("bomb.yaml", "\n".join(bomb) + "\n")
    project.write("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    project.write("latin1.yaml", "x")
    (project.root / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (project.root / "image.yaml").write_bytes(bytes(range(256)))
    problems = project.problems(".")
    assert [p.split(":")[0] for p in problems] == ["bomb.yaml", "deep.yaml", "image.yaml",
                                                   "latin1.yaml"]
    assert "expands to more than" in problems[0]
    assert "nesting" in problems[1]
    assert problems[2].endswith("file contains NUL bytes: binary data, not YAML")
    assert problems[3] == "latin1.yaml:1:10: file is not valid UTF-8 (spec files must be UTF-8 text)"
