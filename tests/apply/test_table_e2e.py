"""A table spec through the command line against the emulator: each row plans, applies,
records and drifts as one spec; an edited row is planned again alone; its names and the
state carry no value of the table."""

from __future__ import annotations

import shutil
from pathlib import Path

from apply_support import check_report

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tables"
MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
RT_STUDY = "1.22.333.4.555555.6.7777777777777777777777777777"


def test_the_example_table_plans_applies_and_drifts_row_by_row(tmp_path, emu, monkeypatch):
    from apply_support import Project

    project = Project(tmp_path / "project", emu, example_specs=False)
    monkeypatch.chdir(project.root)
    for name in ("accession-fixes.yaml", "accession-fixes.csv"):
        shutil.copy(EXAMPLE / name, project.specs_dir / name)
    mr, rt = project.image_set_of(MR_STUDY), project.image_set_of(RT_STUDY)

    plan = project.run("plan", "--detailed-exitcode", "--json")
    assert plan.exit_code == 2, plan.stderr
    entries = {e["image_set_id"]: e for e in plan.json["image_sets"]}
    for groups in plan.json.get("groups", []):          # primary seeds: study updates
        for member in groups["members"]:
            entries.setdefault(member["image_set_id"], member)
    assert set(entries) == {mr, rt}
    names = {e["spec"] for e in entries.values()}
    assert len(names) == 2 and all(n.startswith("accession-fixes.") for n in names)

    applied = project.run("apply", "--auto-approve", "--json")
    assert applied.exit_code == 0, applied.stderr
    report = check_report(applied.json)
    assert {i["status"] for i in report["image_sets"]} == {"applied"}
    assert project.metadata(mr)["Study"]["DICOM"]["AccessionNumber"] == "A2026-0001"
    assert project.metadata(mr)["Study"]["DICOM"]["StudyDescription"] == "MR knee"
    assert project.metadata(rt)["Study"]["DICOM"]["AccessionNumber"] == "A2026-0002"

    # The state records each row under its own name, and holds no value of the table.
    state_text = project.state_path.read_text()
    assert set(project.state()["specs"]) == names
    for value in ("A2026-0001", "A2026-0002", "MR knee", MR_STUDY, RT_STUDY):
        assert value not in state_text
    assert project.run("drift").exit_code == 0
    assert project.run("plan", "--detailed-exitcode").exit_code == 0

    # Edit one row: only that row's spec changes; the other is unchanged.
    csv = project.specs_dir / "accession-fixes.csv"
    csv.write_text(csv.read_text().replace("A2026-0002", "A2026-0099"))
    again = project.run("plan", "--detailed-exitcode", "--json")
    assert again.exit_code == 2
    changed = [e for e in again.json["image_sets"] if e["action"] == "update"] + [
        m for g in again.json.get("groups", []) for m in g["members"]]
    assert {e["image_set_id"] for e in changed} == {rt}


def test_a_row_error_stops_apply_before_anything_is_written(project):
    (project.specs_dir / "fixes.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: ImageSetMetadataTable\nmetadata: {name: fixes}\n"
        "source: fixes.csv\nmatch: {DICOMStudyInstanceUID: study}\n"
        "attributes: {Patient.PatientBirthDate: dob}\n")
    (project.specs_dir / "fixes.csv").write_text(f"study,dob\n{MR_STUDY},20240231\n")
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "specs/fixes.csv:2:2: Patient.PatientBirthDate (column dob): is not a calendar date" \
        in result.stderr
    assert "20240231" not in result.stderr
    assert not project.state_path.exists()          # nothing applied, nothing recorded
    assert all(project.version_count(project.image_set_of(s)) == 1
               for s in (MR_STUDY, RT_STUDY))
