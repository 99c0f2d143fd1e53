"""The cheap part of the reading matrix, in ``make test``: one compact lifecycle through the
real command line against an emulator under each reading the product is most exposed to
(readings.CHEAP: primary image sets, stale-version errors, a lagging search index, the
schema version's type, synchronous validation). The whole e2e subset under every reading is
``make matrix`` (run_matrix.py).

The lifecycle: plan → apply → plan shows no changes → rollback → drift in sync → an
out-of-band edit → drift reports it → apply converges → plan shows no changes.

The spec changes a Patient- and a Study-level element of a seeded (primary) image set. Where
the reading's service refuses that on a primary image set even study-wide, reconciler.yaml
says so (``primaryImageSets``) and the plan must refuse before writing, naming the primary
image set; when reconciler.yaml does not say so, apply reports the service's refusal once and
the next plan says the spec cannot converge.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
from botocore.retries import standard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apply"))

from apply_support import EXAMPLES_DICOM, NM_STUDY, Project, wait_for  # noqa: E402
from matrix import readings  # noqa: E402

from reconciler.emulator.server import ThreadedEmulator  # noqa: E402
from reconciler.engine import applier, planner  # noqa: E402

WANTED = {"Patient": {"PatientName": "READING^LIFECYCLE"},
          "Study": {"StudyDescription": "READING LIFECYCLE"}}
ORIGINAL_STUDY_DESCRIPTION = "Whole Body Bone"


@pytest.fixture(autouse=True)
def fast_timing(monkeypatch):
    """As tests/apply/conftest.py: only the timing knobs (retry backoff, poll intervals)."""
    monkeypatch.setattr(standard.ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG",
                        {"throttling_base_scale": 0.01, "non_throttling_base_scale": 0.005})
    monkeypatch.setattr(applier, "ApplyOptions",
                        functools.partial(applier.ApplyOptions, poll_interval=0.01,
                                          backoff_base=0.01))
    monkeypatch.setattr(planner, "PlanOptions",
                        functools.partial(planner.PlanOptions, poll_interval=0.01))


def _refuses_patient_study_wide(reading: readings.Reading) -> bool:
    """Whether the reading's service refuses a Patient-level change on a primary image set
    even with includeStudyImageSets."""
    return (reading.behaviour("primary_restricted_levels") != "off"
            and reading.behaviour("primary_restriction_include_study") == "refused")


def _truthful_config(reading: readings.Reading) -> dict:
    """reconciler.yaml's primaryImageSets as an operator who knows the service would write it:
    only where it forbids something this spec does (elsewhere the product's defaults suffice:
    Patient/Study changes to primary image sets go study-wide)."""
    if not _refuses_patient_study_wide(reading):
        return {}
    levels = {"patient_series": ["Patient", "Series"], "patient_study": ["Patient", "Study"]}
    return {"primaryImageSets": {
        "restrictedLevels": levels[reading.behaviour("primary_restricted_levels")],
        "studyWideUpdates": "refused"}}


def _project(tmp_path, emu, reading, *, tell_config: bool = True) -> Project:
    project = Project(tmp_path / "project", emu, example_specs=False,
                      extra_config=_truthful_config(reading) if tell_config else None)
    project.write_spec("nm", WANTED, selector={"DICOMStudyInstanceUID": NM_STUDY})
    return project


def _oob_study_description(project: Project, reading, image_set_id: str, value: str) -> None:
    """A second writer changes StudyDescription study-wide (the one way a primary image set's
    Study level can be changed under every reading here), in the SchemaVersion form the
    reading accepts."""
    latest = project.wait_unlocked(image_set_id)["versionId"]
    doc = {"SchemaVersion": readings.schema_version(reading),
           "Study": {"DICOM": {"StudyDescription": value}}}
    project.client.update_image_set_metadata(
        datastoreId=project.datastore_id, imageSetId=image_set_id, latestVersionId=latest,
        includeStudyImageSets=True,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(doc)}})
    done = project.wait_unlocked(image_set_id)
    assert done["imageSetWorkflowStatus"] == "UPDATED", done


def _live(project: Project, image_set_id: str) -> tuple[str, str]:
    doc = project.metadata(image_set_id)
    return doc["Patient"]["DICOM"]["PatientName"], doc["Study"]["DICOM"]["StudyDescription"]


def _emulator(reading: readings.Reading) -> ThreadedEmulator:
    return ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02,
                            behaviours=dict(reading.behaviours), validation=reading.validation)


@pytest.mark.parametrize("reading", readings.CHEAP, ids=lambda r: r.label)
def test_lifecycle_under_the_reading(reading, tmp_path, monkeypatch):
    with _emulator(reading) as emu:
        project = _project(tmp_path, emu, reading)
        monkeypatch.chdir(project.root)
        nm = project.image_set_of(NM_STUDY)
        original_name, original_description = _live(project, nm)

        plan = project.run("plan", "--detailed-exitcode")
        if _refuses_patient_study_wide(reading):
            # The service forbids it and reconciler.yaml says so: refused before any write.
            assert plan.exit_code == 1, plan.stdout + plan.stderr
            assert "primary image set" in plan.stdout + plan.stderr
            apply = project.run("apply", "--auto-approve")
            assert apply.exit_code == 1, apply.stdout + apply.stderr
            assert "primary image set" in apply.stdout + apply.stderr
            assert project.version_count(nm) == 1
            return
        assert plan.exit_code == 2, plan.stdout + plan.stderr

        apply = project.run("apply", "--auto-approve")
        assert apply.exit_code == 0, apply.stdout + apply.stderr
        assert _live(project, nm) == ("READING^LIFECYCLE", "READING LIFECYCLE")
        again = project.run("plan", "--detailed-exitcode")
        assert again.exit_code == 0, again.stdout + again.stderr

        rollback = project.run("rollback", "nm", "--auto-approve")
        assert rollback.exit_code == 0, rollback.stdout + rollback.stderr
        assert _live(project, nm) == (original_name, original_description)
        drift = project.run("drift")
        assert drift.exit_code == 0, drift.stdout + drift.stderr

        _oob_study_description(project, reading, nm, "CHANGED BEHIND OUR BACK")
        drift = project.run("drift")
        assert drift.exit_code == 2, drift.stdout + drift.stderr
        assert "StudyDescription" in drift.stdout

        apply = project.run("apply", "--auto-approve")
        assert apply.exit_code == 0, apply.stdout + apply.stderr
        assert _live(project, nm) == ("READING^LIFECYCLE", "READING LIFECYCLE")
        final = project.run("plan", "--detailed-exitcode")
        assert final.exit_code == 0, final.stdout + final.stderr


@pytest.mark.parametrize("reading", [r for r in readings.CHEAP if _refuses_patient_study_wide(r)],
                         ids=lambda r: r.label)
def test_a_refusal_only_the_service_reveals_is_reported_once_then_cannot_converge(
        reading, tmp_path, monkeypatch):
    """reconciler.yaml does not say the service refuses it: apply reports the refusal (exit 1,
    nothing changed), and the next plan says the spec cannot converge instead of offering the
    same write again."""
    with _emulator(reading) as emu:
        project = _project(tmp_path, emu, reading, tell_config=False)
        monkeypatch.chdir(project.root)
        nm = project.image_set_of(NM_STUDY)
        apply = project.run("apply", "--auto-approve")
        assert apply.exit_code == 1, apply.stdout + apply.stderr
        assert "primary image set" in apply.stdout + apply.stderr
        wait_for(lambda: project.latest(nm)["imageSetState"] != "LOCKED", what="unlocked")
        assert _live(project, nm)[0] != "READING^LIFECYCLE"
        plan = project.run("plan", "--detailed-exitcode")
        assert "cannot converge" in plan.stdout + plan.stderr
