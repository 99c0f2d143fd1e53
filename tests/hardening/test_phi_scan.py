"""No patient data where docs/patient-data.md says it must not be: seed known PHI, run every
command (with --verbose logging, in CI mode, and through error paths), and scan stdout,
stderr, the saved plan and the state file for every value the specs and the live metadata hold."""

import json
from pathlib import Path

import pydicom
import pytest
from plan_files import read_plan

EXAMPLES = Path(__file__).parents[2] / "examples"

# Values the live metadata holds (from the bundled DICOM files) and values the specs declare.
LIVE_PHI = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).get(k))
                   for f in (EXAMPLES / "dicom").glob("*.dcm")
                   for k in ("PatientName", "PatientID", "ReferringPhysicianName",
                             "InstitutionName")} - {"None", ""})
SPEC_PHI = ["DOE^JANE", "19700101", "ACC-0042", "ANON^0001", "ANON0001", "CT CHEST",
            "NM WHOLE BODY BONE", "reviewed"]


def _values_in(text: str, values) -> list[str]:
    return [v for v in values if len(v) >= 4 and v in text]


@pytest.fixture
def project(example_project):
    return example_project


@pytest.fixture
def _run(run_reconciler):
    def run(emulator, project, *args, ci=True):
        return run_reconciler(project, "--verbose", *args, ci=ci)
    return run


def test_no_phi_in_output_logs_or_state_across_every_command(emulator, project, _run):
    assert LIVE_PHI, "the bundled data must hold patient names to scan for"
    outputs = []
    for args in (["validate"], ["plan"], ["plan", "--json"], ["plan", "--out", "plan.json"],
                 ["show", "plan.json"], ["show", "plan.json", "--json"],
                 ["apply", "plan.json"], ["drift"], ["drift", "--json"],
                 ["state", "list"], ["state", "show", "ct-small"],
                 ["rollback", "ct-small", "--auto-approve"], ["apply", "--auto-approve"],
                 ["drift", "--json"]):
        result = _run(emulator, project, *args)
        assert result.returncode in (0, 2), (args, result.stderr)
        outputs.append((args, result.stdout, result.stderr))
    # error paths: a bad spec, a stale plan, an unreachable endpoint
    (project / "specs" / "bad.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: ImageSetMetadata\nmetadata: {name: bad}\n"
        "target: {imageSetId: " + "a" * 32 + "}\n"
        "attributes:\n  Patient: {PatientName: 'SECRET^PATIENT', PatientBirthDate: '19991399'}\n")
    bad = _run(emulator, project, "plan")
    assert bad.returncode == 1
    outputs.append((["plan", "bad"], bad.stdout, bad.stderr))
    assert "SECRET" not in bad.stdout + bad.stderr and "19991399" not in bad.stdout + bad.stderr
    for args, out, err in outputs:
        assert _values_in(out, LIVE_PHI + SPEC_PHI) == [], (args, "stdout")
        assert _values_in(err, LIVE_PHI + SPEC_PHI) == [], (args, "stderr")
    state = (project / ".reconciler" / "state.json").read_text()
    assert _values_in(state, LIVE_PHI + SPEC_PHI + ["SECRET^PATIENT"]) == []
    # The saved plan is sealed: not one value in the file as it lies on disk (or travels as a
    # CI artifact), its payloads included.
    sealed = (project / "plan.json").read_text()
    assert _values_in(sealed, LIVE_PHI + SPEC_PHI + ["DOE^JANE"]) == []
    # Inside, it must carry its payloads (new values, and the current value of what it
    # removes: HealthImaging requires it), but nothing else: not the values it replaces.
    plan = read_plan(project / "plan.json")
    items = plan["image_sets"] + plan["groups"]          # study updates carry requests too
    payloads = "".join(r["updatableAttributes"] or "" for e in items
                       for r in e["requests"]) + "".join(
        r["removableAttributes"] or "" for e in items for r in e["requests"])
    without_payloads = json.dumps({**plan, "image_sets": [
        {**e, "requests": []} for e in plan["image_sets"]], "groups": [
        {**g, "requests": []} for g in plan["groups"]]})
    assert _values_in(without_payloads, LIVE_PHI + SPEC_PHI) == []
    assert "DOE^JANE" in payloads            # the payload is what apply sends
    assert "CompressedSamples^CT1" not in json.dumps(plan)
    assert oct((project / "plan.json").stat().st_mode & 0o777) == "0o600"
    assert oct((project / ".reconciler" / "state.json").stat().st_mode & 0o777) == "0o600"


def test_without_ci_values_show_but_logs_still_hold_none(emulator, project, _run):
    result = _run(emulator, project, "plan", ci=False)
    assert "DOE^JANE" in result.stdout                   # output shows values outside CI
    assert _values_in(result.stderr, LIVE_PHI + SPEC_PHI) == []   # logs never do
