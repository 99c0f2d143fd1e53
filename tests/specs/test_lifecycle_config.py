"""reconciler.yaml's lifecycle sections: `removed`, `moved` and `limits`, read into the config,
and every problem reported as FILE:LINE:COLUMN: PATH: message before anything else runs."""

from __future__ import annotations

import pytest
from cli_entry import cli_entry
from click.testing import CliRunner

from reconciler.spec.config import ConfigFileError, load_config
from reconciler.spec.lifecycle import Limits, Move, Removal


def _problems(project, text: str) -> list[str]:
    project.write("reconciler.yaml", text)
    with pytest.raises(ConfigFileError) as info:
        load_config(None)
    return [str(d) for d in info.value.diagnostics]


def test_the_sections_are_read(project):
    project.write("reconciler.yaml", """
removed:
  - spec: ct-small
    action: revert
    reason: wrong study (RAD-77)
  - spec: 2024          # a name YAML reads as a number is the name written
    action: forget
moved:
  - {from: a, to: b}
  - {from: b, to: c}
limits:
  maxImageSetsChanged: 50
  maxStudiesChanged: 0
  protectedAttributes: [PatientID, StudyInstanceUID]
""")
    lifecycle = load_config(None).lifecycle
    assert lifecycle.removed == (
        Removal("ct-small", "revert", "wrong study (RAD-77)", "reconciler.yaml:3"),
        Removal("2024", "forget", None, "reconciler.yaml:6"))
    assert lifecycle.removal("ct-small").action == "revert" and lifecycle.removal("x") is None
    # Chains resolve: a renamed twice goes straight to its last name.
    assert lifecycle.renames() == {"a": Move("a", "c", "reconciler.yaml:9"),
                                   "b": Move("b", "c", "reconciler.yaml:10")}
    assert lifecycle.limits == Limits(50, 0, ("PatientID", "StudyInstanceUID"))


def test_no_sections_mean_forget_no_renames_and_no_limits(project):
    project.write("reconciler.yaml", "redact: never\n")
    lifecycle = load_config(None).lifecycle
    assert lifecycle.removed == () and lifecycle.renames() == {}
    assert not lifecycle.limits.configured


def test_every_problem_is_reported_with_file_line_and_field(project):
    found = _problems(project, """removed:
  - spec: ct-small
    action: revert
  - spec: ct-small
    action: forget
  - spec: Bad_Name
    action: destroy
  - spec: old
    action: revert
  - action: revert
moved:
  - {from: old, to: new}
  - {from: x, to: x}
  - {from: p, to: q}
  - {from: q, to: p}
  - {from: r, to: new}
limits:
  maxImageSetsChanged: -1
  maxStudiesChanged: many
  protectedAttributes: [PatientID, PatientIdd, patient-id]
  maxSeries: 3
""")
    assert found == [
        "reconciler.yaml:4:11: removed[1].spec: spec ct-small is listed twice (first at line 2)",
        "reconciler.yaml:6:11: removed[2].spec: must be a spec name: 1-128 lower-case letters, "
        "digits, '.', '_' or '-', starting and ending with a letter or digit",
        "reconciler.yaml:7:13: removed[2].action: must be forget or revert",
        "reconciler.yaml:8:11: removed[3].spec: spec old was renamed (moved at line 12): name "
        "the new name",
        "reconciler.yaml:10:5: removed[4]: missing required key spec",
        "reconciler.yaml:13:19: moved[1].to: a spec cannot be moved to its own name",
        "reconciler.yaml:14:5: moved[2]: the moves form a cycle: p → q → p",
        "reconciler.yaml:15:5: moved[3]: the moves form a cycle: q → p → q",
        "reconciler.yaml:16:19: moved[4].to: two specs cannot be moved to one name: new (first "
        "at line 12)",
        "reconciler.yaml:18:24: limits.maxImageSetsChanged: must be a whole number, 0 or more",
        "reconciler.yaml:19:22: limits.maxStudiesChanged: must be a whole number, 0 or more",
        "reconciler.yaml:20:36: limits.protectedAttributes[1]: unknown DICOM keyword PatientIdd; "
        "did you mean PatientID?",
        "reconciler.yaml:20:48: limits.protectedAttributes[2]: must be a DICOM keyword such as "
        "PatientID",
        "reconciler.yaml:21:3: limits.maxSeries: unknown key maxSeries",
    ]


def test_a_bad_config_stops_every_command_before_anything_is_read(project):
    project.write("reconciler.yaml", "removed:\n  - spec: ct-small\n    action: destroy\n")
    for args in (["validate"], ["plan"], ["state", "list"], ["drift"]):
        result = CliRunner().invoke(cli_entry(), args, catch_exceptions=False)
        assert result.exit_code == 1, args
        assert result.stderr.startswith(
            "reconciler.yaml:3:13: removed[0].action: must be forget or revert\n"), args
