"""import: live metadata → a valid spec that plan reports as no change, at every level choice,
for every bundled study, through the CLI against the emulator."""

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def _run(emulator, tmp_path, *args):
    return CliRunner().invoke(cli, ["--no-color", "--config", str(tmp_path / "reconciler.yaml"),
                                    *args],
                              env={"AWS_ENDPOINT_URL_MEDICAL_IMAGING": emulator.url, "CI": None})


@pytest.fixture
def project(emulator, tmp_path):
    (tmp_path / "reconciler.yaml").write_text(f"datastoreId: {emulator.datastore_id}\n")
    return tmp_path


@pytest.mark.parametrize("levels", ["Patient,Study", "Patient,Study,Series",
                                    "Patient,Study,Series,Instance"])
def test_imported_spec_plans_as_no_change(emulator, project, levels):
    result = _run(emulator, project, "import", "--selector", f"DICOMStudyInstanceUID={CT_STUDY}",
                  "--level", levels)
    assert result.exit_code == 0, result.output
    spec_file = project / "ct.yaml"
    spec_file.write_text(result.stdout)
    doc = yaml.safe_load(result.stdout)
    assert doc["attributes"]["Patient"]["PatientName"] == "CompressedSamples^CT1"
    assert doc["attributes"]["Patient"]["PatientBirthDate"] == ""  # live null: present, empty
    assert ("Series" in doc["attributes"]) == ("Series" in levels)
    assert "StudyInstanceUID" not in doc["attributes"]["Study"]   # needs force: left out
    assert "# Left out (needs force):" in result.stdout
    plan = _run(emulator, project, "plan", str(spec_file), "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert "0 image sets to update, 1 unchanged" in plan.stdout


def test_every_bundled_image_set_imports_to_a_valid_no_change_spec(emulator, project):
    ids = emulator.image_set_ids
    assert len(ids) >= 5
    args = ["import", "--level", "Patient,Study,Series,Instance"]
    for image_set_id in ids:
        args += ["--image-set-id", image_set_id]
    result = _run(emulator, project, *args)
    assert result.exit_code == 0, result.output
    (project / "all.yaml").write_text(result.stdout)
    plan = _run(emulator, project, "plan", str(project / "all.yaml"), "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert f"0 image sets to update, {len(ids)} unchanged" in plan.stdout


def test_import_usage_errors_exit_1(emulator, project):
    assert _run(emulator, project, "import").exit_code == 1
    bad = _run(emulator, project, "import", "--image-set-id", "a" * 32, "--level", "Nope")
    assert bad.exit_code == 1
    assert "unknown level" in bad.output
