"""A service that accepts ``SchemaVersion`` in one form only (the emulator's
``schema_version=string`` / ``=number``): the payloads repeat the SchemaVersion of the pinned
metadata document the diff was made against (value and JSON type), in the plan and in apply's
re-diff, so every write goes through."""

from __future__ import annotations

import json

import pytest
from apply_support import EXAMPLES_DICOM, Project, check_report
from plan_files import read_plan

from reconciler.emulator.server import ThreadedEmulator

FORMS = {"string": "1.1", "number": 1.1}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_write_uses_the_form_of_the_served_document(tmp_path, monkeypatch, form):
    behaviours = {"schema_version": form, "seed_primary": "false"}
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02,
                          behaviours=behaviours) as emu:
        project = Project(tmp_path / "project", emu)
        monkeypatch.chdir(project.root)
        ct = project.image_set_of("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")
        served = project.metadata(ct)["SchemaVersion"]
        assert served == FORMS[form] and type(served) is type(FORMS[form])

        assert project.run("plan", "--out", "plan.json").exit_code == 0
        plan = read_plan(project.root / "plan.json")
        sent = [json.loads(r[k])["SchemaVersion"] for e in plan["image_sets"]
                for r in e["requests"] for k in ("updatableAttributes", "removableAttributes")
                if r[k]]
        assert sent and all(type(v) is type(FORMS[form]) and v == FORMS[form] for v in sent)

        # A second writer moves ct-small on (an attribute we do not manage): apply re-reads,
        # re-diffs and builds the payload again, in the same form.
        project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDate": "20240105"}}},
                          schema_version=FORMS[form])
        result = project.run("apply", "plan.json", "--json")
        assert result.exit_code == 0, result.stdout
        items = {i["spec"]: i for i in check_report(result.json)["image_sets"]}
        assert {i["status"] for i in items.values()} == {"applied"}
        assert items["ct-small"]["version_before"] == "2"
        assert project.metadata(ct)["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"

        again = project.run("plan", "--read-all", "--detailed-exitcode")
        assert again.exit_code == 0, again.stdout
