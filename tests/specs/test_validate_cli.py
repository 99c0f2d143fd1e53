"""`reconciler validate` through click's CliRunner and through main(): exit 0 when valid,
1 when not, every problem on stderr in the FILE:LINE:COLUMN: PATH: message form."""

from __future__ import annotations

from click.testing import CliRunner
from spec_helpers import HEAD, at

from reconciler.cli import cli, main

GOOD = HEAD + "attributes:\n  Study: {StudyDescription: CT CHEST}\n"
BAD = HEAD + "attributes:\n  Study:\n    StudyDate: 20240231\n    PatientName: DOE^JANE\n"
BAD_LINES = [
    "s.yaml:{}:{}: attributes.Study.StudyDate: is not a calendar date".format(
        *at(BAD, "20240231")),
    "s.yaml:{}:{}: attributes.Study.PatientName: PatientName belongs to the Patient level "
    "(declare it under attributes.Patient)".format(*at(BAD, "PatientName")),
]


def test_cli_runner_valid(project):
    project.write("s.yaml", GOOD)
    result = CliRunner().invoke(cli, ["validate", "s.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 spec valid.\n"


def test_cli_runner_invalid_carries_every_diagnostic(project):
    project.write("s.yaml", BAD)
    result = CliRunner().invoke(cli, ["validate", "s.yaml"])
    # CliRunner goes through the same error-to-exit-code mapping as the console script
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [*BAD_LINES, "Error: 2 problems found in the specs"]


def test_main_valid(project, capsys):
    project.write("specs/s.yaml", GOOD)
    assert main(["validate", "specs"]) == 0
    assert capsys.readouterr().out == "1 spec valid.\n"
    assert main(["--quiet", "validate", "specs"]) == 0
    assert capsys.readouterr().out == ""


def test_main_invalid_lists_every_problem_on_stderr(project, capsys):
    project.write("s.yaml", BAD)
    project.write("t.yaml", "a: [\n")
    assert main(["validate", "s.yaml", "t.yaml", "missing.yaml"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[:3] == ["missing.yaml:1:1: no such file or directory", *BAD_LINES]
    assert lines[3].startswith("t.yaml:2:1: YAML syntax error: ")
    assert lines[4:] == ["Error: 4 problems found in the specs"]


def test_main_uses_the_config_and_reports_its_problems(project, capsys):
    project.write("conf.yaml", "specs: [specs]\nredact: sometimes\n")
    project.write("specs/s.yaml", GOOD)
    assert main(["--config", "conf.yaml", "validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "conf.yaml:2:9: redact: must be one of: auto, always, never",
        "Error: 1 problem found in conf.yaml",
    ]
    project.write("conf.yaml", "specs: [specs]\n")
    assert main(["--config", "conf.yaml", "validate"]) == 0
    assert main(["--config", "nope.yaml", "validate"]) == 1
    assert "config file not found: nope.yaml" in capsys.readouterr().err


def test_main_never_prints_values_of_bad_attributes(project, capsys):
    project.write("s.yaml", HEAD + "attributes:\n  Patient:\n    PatientBirthDate: 19700231\n"
                                   "    PatientName: SECRET^NAME^A^B^C^D\n")
    assert main(["validate", "s.yaml"]) == 1
    err = capsys.readouterr().err
    assert "19700231" not in err and "SECRET" not in err


def test_warnings_go_to_stderr_and_do_not_fail(project, capsys):
    project.write("s.yaml", HEAD + "force: true\nattributes:\n  Study: {StudyDescription: X}\n")
    assert main(["validate", "s.yaml"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "1 spec valid.\n"
    assert "s.yaml:8:1: force: force: true, but nothing in this spec needs it" in captured.err
