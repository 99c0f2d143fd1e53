"""Table specs (reconciler/spec/tables.py): a kind ImageSetMetadataTable document and its CSV
file load as one spec per row, checked by the YAML spec's own code, every problem reported at
FILE.csv:ROW:COLUMN before anything is sent."""

from __future__ import annotations

import gc
import textwrap
import tracemalloc
from dataclasses import replace

import pytest

from reconciler.core.canonical import digest
from reconciler.core.errors import SpecError
from reconciler.spec.config import load_config
from reconciler.spec.loader import load_specs
from reconciler.spec.rows import RowShape, RowSpec
from reconciler.spec.tables import EMPTY
from reconciler.spec.types import Position, Spec

DS = "d" * 32
STUDY_A, STUDY_B = "1.2.840.1.1", "1.2.840.1.2"


def table(tmp_path, csv: str, *, attributes: str = "  Study.AccessionNumber: accession\n",
          match: str = "  DICOMStudyInstanceUID: study_uid\n", extra: str = "",
          csv_bytes: bytes | None = None):
    (tmp_path / "fixes.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: reconciler/v1
        kind: ImageSetMetadataTable
        metadata: {{name: fixes, labels: {{team: ris}}}}
        target: {{datastoreId: {DS}}}
        source: fixes.csv
        """) + "match:\n" + match + "attributes:\n" + attributes + extra)
    (tmp_path / "fixes.csv").write_bytes(csv_bytes if csv_bytes is not None
                                         else csv.encode("utf-8"))
    return tmp_path / "fixes.yaml"


def load(path):
    return load_specs([path.name], load_config(None))   # run from its directory: short names


def problems(path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load(path)
    return [str(d) for d in caught.value.diagnostics]


def test_each_row_is_a_spec_named_by_a_hash_of_its_match_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path, "study_uid,accession,description\n"
                           f"{STUDY_A},0042,Knee\n{STUDY_B},A7,\n",
                 attributes="  Study.AccessionNumber: accession\n"
                            "  Study.StudyDescription: description\n")
    first, second = load(path)
    assert first.name == f"fixes.{digest({'DICOMStudyInstanceUID': STUDY_A})[:12]}"
    assert second.name == f"fixes.{digest({'DICOMStudyInstanceUID': STUDY_B})[:12]}"
    assert first.target.selector == {"DICOMStudyInstanceUID": STUDY_A}
    assert first.target.datastore_id == DS
    # A number-looking cell keeps its text for a string VR, as in a YAML spec.
    assert first.attributes.study["AccessionNumber"].value == "0042"
    assert first.attributes.study["StudyDescription"].value == "Knee"
    # An empty cell: not managed by that row.
    assert set(second.attributes.study) == {"AccessionNumber"}
    assert first.labels == {"team": "ris", "table": "fixes"}
    assert (first.position.file, first.position.line) == ("fixes.csv", 2)
    # Names never carry a value of the row.
    assert STUDY_A not in first.name and "0042" not in first.name


def test_a_row_name_is_stable_when_other_columns_or_the_order_change(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {s.name: s.digest for s in load(table(
        tmp_path, f"study_uid,accession\n{STUDY_A},A1\n{STUDY_B},B1\n"))}
    after = {s.name: s.digest for s in load(table(
        tmp_path, f"study_uid,accession\n{STUDY_B},B1\n{STUDY_A},A2\n"))}
    assert set(before) == set(after)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [f"fixes.{digest({'DICOMStudyInstanceUID': STUDY_A})[:12]}"]


def test_the_null_marker_declares_an_attribute_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, = load(table(tmp_path, f"study_uid,accession\n{STUDY_A},<null>\n"))
    assert spec.attributes.study["AccessionNumber"].absent


def test_every_cell_problem_is_reported_at_its_row_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path,
                 "study_uid,accession,dob,sid\n"
                 f"{STUDY_A},A1,20240231,\n"
                 "not a uid,THIS-ACCESSION-IS-TOO-LONG,,\n"
                 f"{STUDY_A},A3,,\n"
                 f"{STUDY_B},,,17\n",
                 attributes="  Study.AccessionNumber: accession\n"
                            "  Patient.PatientBirthDate: dob\n  Study.StudyID: sid\n")
    found = problems(path)
    assert found == [
        "fixes.csv:2:3: Patient.PatientBirthDate (column dob): is not a calendar date",
        "fixes.csv:3:1: DICOMStudyInstanceUID (column study_uid): must be a DICOM UID: digits "
        "and dots, no leading zeros in a component, at most 64 characters",
        "fixes.csv:3:2: Study.AccessionNumber (column accession): is 26 characters long; VR SH "
        "allows at most 16",
        "fixes.csv:4:1: row: the same match values as row 2: each row must select its own "
        "image sets",
        "fixes.csv:5:4: Study.StudyID (column sid): changing StudyID needs force: true in the "
        "spec (HealthImaging refuses it otherwise)",
    ]
    # Messages name rows, columns and rules, never a value of the file.
    assert not any(v in " ".join(found) for v in ("20240231", "THIS-ACCESSION", "not a uid"))


@pytest.mark.parametrize("csv, expected", [
    ("", "fixes.csv:1:1: a header row naming the columns is required"),
    ("study_uid,study_uid\n", "fixes.csv:1:2: column 'study_uid' is named twice"),
    ("uid,accession\n1.2,A\n", "fixes.yaml:7:26: match.DICOMStudyInstanceUID: column "
                               "'study_uid' is not in the header of fixes.csv"),
])
def test_a_file_that_cannot_be_a_table_is_refused(tmp_path, monkeypatch, csv, expected):
    monkeypatch.chdir(tmp_path)
    assert problems(table(tmp_path, csv)) == [expected]


def test_series_level_attributes_are_for_yaml_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = problems(table(tmp_path, f"study_uid,x\n{STUDY_A},A\n",
                           attributes="  Series[1.2.3].SeriesDescription: x\n"))
    assert len(found) == 1 and "must be Patient.KEY or Study.KEY" in found[0]


def test_a_byte_order_mark_and_quoted_cells_are_read_as_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, = load(table(tmp_path, "", csv_bytes=(
        "\ufeffstudy_uid,accession,description\n"
        f'{STUDY_A},A1,"Knee, left"\n').encode("utf-8"),
        attributes="  Study.AccessionNumber: accession\n  Study.StudyDescription: description\n"))
    assert spec.attributes.study["StudyDescription"].value == "Knee, left"


def test_a_missing_csv_file_is_reported_at_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path, "")
    (tmp_path / "fixes.csv").unlink()
    found = problems(path)
    assert len(found) == 1 and found[0].startswith("fixes.yaml:5:9: source: cannot read fixes.csv")


def test_rows_share_what_they_hold_alike_read_only(tmp_path, monkeypatch):
    # A table may have 200,000 rows: the labels and the empty attribute maps are one object for
    # all of them, which no row can change (so no row can change another).
    monkeypatch.chdir(tmp_path)
    first, second = load(table(tmp_path, f"study_uid,accession\n{STUDY_A},A1\n{STUDY_B},B1\n"))
    assert first.labels is second.labels
    assert first.attributes.patient is second.attributes.patient
    assert first.attributes.series is second.attributes.series
    for shared in (first.labels, first.attributes.patient, first.attributes.series):
        with pytest.raises(TypeError):
            shared["PatientName"] = "x"    # type: ignore[index]
    assert dict(first.attributes.patient) == {} and dict(first.attributes.series) == {}
    # What differs between rows is each row's own.
    assert first.attributes.study is not second.attributes.study
    assert first.target.selector is not second.target.selector
    del first.attributes.study["AccessionNumber"]
    first.target.selector["DICOMStudyInstanceUID"] = STUDY_B
    assert second.attributes.study["AccessionNumber"].value == "B1"
    assert second.target.selector == {"DICOMStudyInstanceUID": STUDY_B}
    assert first.name != second.name


def test_a_row_has_the_digest_of_the_yaml_spec_it_stands_for(tmp_path, monkeypatch):
    # The digest goes into the state and saved plans: sharing objects between rows must not
    # change it.
    monkeypatch.chdir(tmp_path)
    (row,) = load(table(tmp_path, f"study_uid,accession\n{STUDY_A},0042\n"))
    yaml_dir = tmp_path / "yaml"
    yaml_dir.mkdir()
    (yaml_dir / "row.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: reconciler/v1
        kind: ImageSetMetadata
        metadata: {{name: {row.name}, labels: {{team: ris, table: fixes}}}}
        target: {{datastoreId: {DS}, selector: {{DICOMStudyInstanceUID: "{STUDY_A}"}}}}
        attributes: {{Study: {{AccessionNumber: "0042"}}}}
        """))
    monkeypatch.chdir(yaml_dir)
    (spec,) = load_specs(["row.yaml"], load_config(None))
    assert row.digest == spec.digest


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_rows_far_into_the_file_are_reported_at_their_own_line(tmp_path, monkeypatch, newline):
    # The file is read row by row (in chunks of its bytes): line numbers must still be those
    # of the file, across blank lines, a cell spanning two lines and every line ending.
    monkeypatch.chdir(tmp_path)
    lines = ["study_uid,accession,description"]
    lines += [f"1.2.840.1.{i},A{i}," for i in range(3000)]
    lines += ["", f'1.2.840.2.1,A,"two{newline}lines"', "1.2.840.2.2,THIS-ACCESSION-IS-TOO-LONG,"]
    found = problems(table(tmp_path, newline.join(lines) + newline,
                           attributes="  Study.AccessionNumber: accession\n"
                                      "  Study.StudyDescription: description\n"))
    assert [f.split(": ")[0] for f in found] == ["fixes.csv:3003:3", "fixes.csv:3005:2"]


def test_a_file_that_is_not_csv_to_the_end_loads_no_row(tmp_path, monkeypatch):
    # The whole file is checked before any row is built: a bad line late in it is the one
    # problem, however many good or bad rows precede it.
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"1.2.840.1.{i},A{i}\n" for i in range(3000))
    too_long = '1.2.3,"' + "x" * 140_000 + '"\n'      # over the csv module's field limit
    found = problems(table(tmp_path, "study_uid,accession\nnot-a-uid,A\n" + rows + too_long))
    assert len(found) == 1 and found[0].startswith("fixes.csv:3003:1: not valid CSV")
    found = problems(table(tmp_path, "", csv_bytes=b"study_uid,accession\n" + rows.encode()
                           + b"1.2.3,\xff\n"))
    assert len(found) == 1 and found[0].startswith("fixes.csv:1:1: not UTF-8")


def full_specs(path, monkeypatch):
    """The table's rows as the full specs they were built as (never held as RowSpecs)."""
    with monkeypatch.context() as patched:
        patched.setattr(RowShape, "compact", lambda self, spec, columns: None)
        return load(path)


@pytest.mark.parametrize("match, extra", [
    ("  DICOMStudyInstanceUID: study_uid\n  DICOMPatientId: patient_id\n", "force: true\n"),
    ("  imageSetId: image_set\n", "force: true\nincludeStudyImageSets: true\n"),
])
def test_a_row_is_held_as_its_own_values_and_reads_as_the_spec_it_stands_for(
        tmp_path, monkeypatch, match, extra):
    # A table of 200,000 rows is held by every command: a row keeps its own values, and
    # makes its target and attributes, equal to the spec it was built as, when asked.
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path,
                 "study_uid,patient_id,image_set,accession,dob,sid,description\n"
                 f"{STUDY_A},P1,{'a' * 32},0042,<null>,17,\n"
                 f"{STUDY_B},P2,{'b' * 32},A7,19700101,,Knee\n"
                 f"1.2.840.1.3,P3,{'c' * 32},<null>,,,\n",
                 match=match, extra=extra,
                 attributes="  Study.AccessionNumber: accession\n"
                            "  Patient.PatientBirthDate: dob\n  Study.StudyID: sid\n"
                            "  Study.StudyDescription: description\n")
    held, full = load(path), full_specs(path, monkeypatch)
    assert [type(s) for s in held] == [RowSpec] * 3 and [type(s) for s in full] == [Spec] * 3
    assert held == full
    for row, spec in zip(held, full):
        for field in ("name", "digest", "position", "target", "attributes", "labels", "force",
                      "include_study_image_sets"):
            assert getattr(row, field) == getattr(spec, field), field
        assert type(row.whole()) is Spec and row.whole() == spec
        assert replace(row.whole(), force=not spec.force).force is not row.force
    assert full[2].attributes.study["AccessionNumber"].absent
    assert "StudyID" not in held[1].attributes.study          # its cell is empty
    assert held[0] != held[1]


def test_a_row_the_tables_shape_cannot_make_again_stays_as_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = full_specs(table(
        tmp_path, f"study_uid,accession\n{STUDY_A},A1\n{STUDY_B},B1\n"), monkeypatch)
    shape, columns = RowShape("fixes.csv", EMPTY), [("Study", "AccessionNumber")]
    assert type(shape.compact(first, columns)) is RowSpec
    # Not what every row of the table has alike, or positions elsewhere than its own row:
    assert shape.compact(replace(second, force=True), columns) is None
    assert shape.compact(replace(second, labels={"team": "ris"}), columns) is None
    assert shape.compact(replace(second, position=Position("fixes.csv", 9, 1)), columns) is None
    assert shape.compact(second, columns) == second


def test_a_row_holds_less_than_half_of_its_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path, "study_uid,accession\n" + "".join(
        f"1.2.826.0.1.3680043.8.498.{10**20 + i},FIX{i:07d}\n" for i in range(2000)))

    def held(loading) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            specs = loading()
            gc.collect()
            return tracemalloc.get_traced_memory()[0] // len(specs)
        finally:
            tracemalloc.stop()

    load(path)      # what loading imports and caches once is not a row's
    assert held(lambda: load(path)) < held(lambda: full_specs(path, monkeypatch)) / 2
