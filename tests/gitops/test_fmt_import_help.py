"""The repository-side tools of the GitOps workflow: `reconciler fmt` (and its pre-commit
hooks), `import --out-dir` writing the one-file-per-study layout, and an example in the
`--help` of every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from gitops_support import EXAMPLE, REPO_ROOT

from reconciler.cli import cli
from reconciler.spec.fmt import FormatError, format_text

MESSY = """\
# yaml-language-server: $schema=../schemas/spec.v1.schema.json
# A comment above everything.
apiVersion:   reconciler/v1
kind: ImageSetMetadata
metadata:
    name: ct-small        # the key in plans (comments keep their column)
    labels: {team: radiology}
target:
    selector:
        DICOMStudyInstanceUID: 1.3.6.1.4.1.5962.1.2.1.20040119072730.12322
attributes:
    Patient:
        PatientBirthDate: "19700101"   
    Study:
        StudyDate: 20240105
        AccessionNumber: ~
        # a comment between keys
        StudyDescription: 'CT CHEST'
---
apiVersion: reconciler/v1
kind: ImageSetMetadata
metadata: {name: second}
target:
  imageSetId: 0123456789abcdef0123456789abcdef
attributes:
  Study:
    ReferringPhysicianName: null
"""

CANONICAL = """\
# yaml-language-server: $schema=../schemas/spec.v1.schema.json
# A comment above everything.
apiVersion: reconciler/v1
kind: ImageSetMetadata
metadata:
  name: ct-small          # the key in plans (comments keep their column)
  labels: {team: radiology}
target:
  selector:
    DICOMStudyInstanceUID: 1.3.6.1.4.1.5962.1.2.1.20040119072730.12322
attributes:
  Patient:
    PatientBirthDate: "19700101"
  Study:
    StudyDate: 20240105
    AccessionNumber: null
    # a comment between keys
    StudyDescription: 'CT CHEST'
---
apiVersion: reconciler/v1
kind: ImageSetMetadata
metadata: {name: second}
target:
  imageSetId: 0123456789abcdef0123456789abcdef
attributes:
  Study:
    ReferringPhysicianName: null
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, ["--no-color", *args], catch_exceptions=False)


def test_format_text_is_canonical_keeps_comments_quotes_and_is_idempotent():
    assert format_text(MESSY) == CANONICAL
    assert format_text(CANONICAL) == CANONICAL


def test_format_text_refuses_what_it_cannot_parse():
    with pytest.raises(FormatError, match=r"^x.yaml:2:"):
        format_text("a: 1\n b: [\n", "x.yaml")


def test_the_example_repository_is_formatted():
    for path in sorted((EXAMPLE / "specs").glob("*.yaml")):
        assert format_text(path.read_text(), str(path)) == path.read_text(), path


def test_fmt_command_check_then_rewrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reconciler.yaml").write_text("specs: [specs]\n")
    (tmp_path / "specs").mkdir()
    messy = tmp_path / "specs" / "a.yaml"
    messy.write_text(MESSY)
    (tmp_path / "specs" / "b.yaml").write_text(CANONICAL.split("---\n")[1])
    result = invoke("fmt", "--check")
    assert result.exit_code == 1
    assert result.stdout == "would reformat specs/a.yaml\n"
    assert messy.read_text() == MESSY                  # --check changes nothing
    result = invoke("fmt")
    assert result.exit_code == 0 and result.stdout == "reformatted specs/a.yaml\n"
    assert messy.read_text() == CANONICAL
    assert invoke("fmt", "--check").exit_code == 0
    (tmp_path / "specs" / "bad.yaml").write_text("a: [\n")
    result = invoke("fmt", "--check", "specs/bad.yaml")
    assert result.exit_code == 1 and "specs/bad.yaml:" in result.stderr


def test_pre_commit_hooks_offer_validate_and_fmt():
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {hook["id"]: hook for hook in hooks}
    assert set(by_id) == {"reconciler-validate", "reconciler-fmt"}
    for hook_id, command in (("reconciler-validate", "validate"), ("reconciler-fmt", "fmt")):
        hook = by_id[hook_id]
        assert hook["entry"] == f"reconciler {command}" and hook["language"] == "python"
        assert hook["pass_filenames"] is False       # names and overlaps span all the specs
    config = yaml.safe_load((EXAMPLE / ".pre-commit-config.yaml").read_text())
    assert {h["id"] for h in config["repos"][0]["hooks"]} == set(by_id)


def test_import_out_dir_writes_one_file_per_study(emu, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", emu.url)
    (tmp_path / "reconciler.yaml").write_text(
        f"datastoreId: {emu.datastore_id}\nspecs: [specs]\n")
    ids = [arg for image_set in emu.image_set_ids for arg in ("--image-set-id", image_set)]
    result = invoke("import", *ids, "--out-dir", "specs")
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "specs").glob("*.yaml"))
    assert len(files) == len(result.stdout.splitlines()) >= 4
    names = set()
    for file in files:
        assert file.name.startswith("study-") and len(file.stem) == len("study-") + 12
        docs = list(yaml.safe_load_all(file.read_text()))
        studies = {d["metadata"]["name"].split("-")[1] for d in docs}
        assert studies == {file.stem.split("-")[1]}   # every spec of the file is of its study
        names |= {d["metadata"]["name"] for d in docs}
        for patient in ("CompressedSamples", "Lestrade"):   # names carry no patient data
            assert patient not in file.name
    assert len(names) == len(emu.image_set_ids)
    # The layout the example repository uses: the CT study's file has the same name.
    assert (tmp_path / "specs" / "study-2966c9f9fbae.yaml").exists()
    assert (EXAMPLE / "specs" / "study-2966c9f9fbae.yaml").exists()
    plan = invoke("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output           # imported: nothing to change
    again = invoke("import", *ids, "--out-dir", "specs")
    assert again.exit_code == 1 and "not overwriting" in again.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)] + [()], ids=" ".join)
def test_every_help_shows_an_example(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout and "  reconciler " in result.stdout, path


def test_shell_completion_as_the_docs_document_it():
    """click's completion goes through ReconcilerGroup.main (which maps exit codes); the line
    docs/commands.md gives is the one that works."""
    script = subprocess.run([str(Path(sys.executable).with_name("reconciler"))],
                            env={**os.environ, "_RECONCILER_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_reconciler_completion" in script.stdout
    commands = (REPO_ROOT / "docs" / "commands.md").read_text("utf-8")
    assert '_RECONCILER_COMPLETE=bash_source reconciler' in commands
