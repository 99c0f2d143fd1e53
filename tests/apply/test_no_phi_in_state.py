"""The state holds no metadata value: after applies, a drift, a rollback and a failed apply,
no value of a spec or of the live metadata (before or after) appears in any file under
.reconciler/, nor in what `state list` / `state show` print. Not even the Series and SOP
Instance UIDs the specs name (PS3.15 identifiers): the state keys them too."""

from __future__ import annotations

import os
import re
import stat

import pytest
import yaml
from apply_support import EXAMPLE_STUDIES, EXAMPLES_DICOM, Project, sample_documents, seed_documents

from reconciler.emulator.server import ThreadedEmulator

HEX = re.compile(r"[0-9a-f]{32,64}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)")


@pytest.fixture
def phi_project(tmp_path, monkeypatch):
    docs = sample_documents(3, prefix="1.2.826.0.1.3680043.10.77")
    seeds = seed_documents(tmp_path / "seeds", docs)
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM), *seeds], update_delay=0.02) as emu:
        project = Project(tmp_path / "project", emu)
        monkeypatch.chdir(project.root)
        yield project, docs


def strings(node, out):
    """Every string value, and every number of four digits or more, in a metadata document or
    a spec's attributes."""
    if isinstance(node, dict):
        for value in node.values():
            strings(value, out)
    elif isinstance(node, list):
        for value in node:
            strings(value, out)
    elif isinstance(node, str):
        out.add(node)
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and abs(node) >= 1000:
        out.add(str(node))
    return out


def structural_uids(spec_docs):
    """Series and instance UIDs the specs declare as keys (the state's attribute paths hold
    them only as keyed tokens)."""
    uids = set()
    for doc in spec_docs:
        for suid, series in (doc["attributes"].get("Series") or {}).items():
            uids.add(suid)
            for sop in ((series or {}).get("Instances") or {}):
                uids.add(sop)
    return uids


def scrub(text, ids):
    for value in ids:
        text = text.replace(value, "<ID>")
    text = UUID.sub("<UUID>", text)
    text = TIME.sub("<TIME>", text)
    return HEX.sub("<HEX>", text)


def test_the_state_never_holds_a_metadata_value(phi_project):
    project, docs = phi_project
    # Specs on the sample studies: pseudonyms, dates, descriptions, a removal of a value.
    for i, doc in enumerate(docs):
        study_uid = doc["Study"]["DICOM"]["StudyInstanceUID"]
        project.write_spec(f"sample-{i}", {
            "Patient": {"PatientName": f"PSEUDO^SUBJECT{i:02d}", "PatientID": f"PSN-4410-{i:03d}",
                        "PatientBirthDate": "19450607"},
            "Study": {"StudyDescription": f"RESEARCH ARM {i} PELVIS", "AccessionNumber": None,
                      "ReferringPhysicianName": "Watson^John^H"},
        }, selector={"DICOMStudyInstanceUID": study_uid})
    ids = {name: project.image_set_of(study) for name, study in EXAMPLE_STUDIES.items()}
    ids.update({f"sample-{i}": project.image_set_of(d["Study"]["DICOM"]["StudyInstanceUID"])
                for i, d in enumerate(docs)})
    before = {name: project.metadata(i) for name, i in ids.items()}

    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_oob(ids["sample-1"], updatable={"Patient": {"DICOM": {
        "PatientName": "REAL^NAME^LEAKED"}}})
    assert project.run("drift").exit_code == 2
    assert project.run("rollback", "sample-2", "--auto-approve").exit_code == 0
    project.emu.faults.add("UpdateImageSetMetadata", "update_failed", times=1)
    assert project.run("apply", "--auto-approve").exit_code == 1     # repairs sample-1: fails
    after = {name: project.metadata(i) for name, i in ids.items()}

    spec_docs = [yaml.safe_load(p.read_text()) for p in sorted(project.specs_dir.glob("*.yaml"))]
    values = set()
    for doc in spec_docs:
        strings(doc["attributes"], values)
    for doc in [*before.values(), *after.values()]:
        for level in ("Patient", "Study"):
            strings(doc[level], values)
    values.add("REAL^NAME^LEAKED")
    uids = structural_uids(spec_docs)
    values = {v for v in values if len(v.strip()) >= 4} | uids
    # Sanity: the scan looks for what matters.
    for must in ("DOE^JANE", "ANON0001", "Lestrade^G", "SAMPLE^PATIENT01", "MRN-7731-0002",
                 "19450607", "PSEUDO^SUBJECT00", "RESEARCH ARM 2 PELVIS", "ACC-5531-0001",
                 "Moriarty^James", "Watson^John^H", "1.2.826.0.1.3680043.10.77.1",
                 "CompressedSamples^CT1", "20040119",
                 "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",        # a series the specs name
                 "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"):     # an instance they name
        assert must in values, must

    files = sorted(p for p in project.state_path.parent.iterdir() if p.is_file())
    assert project.state_path in files
    shown = [project.run("state", "list").stdout]
    shown += [project.run("state", "show", name).stdout for name in ids]
    image_set_ids = set(ids.values()) | {project.datastore_id}
    for where, text in [*((str(p), p.read_text()) for p in files),
                        *(("state output", s) for s in shown)]:
        clean = scrub(text, image_set_ids)
        leaked = sorted(v for v in values if v in clean)
        assert not leaked, f"{where} holds metadata values: {leaked}"
    # And the state is private to its owner.
    assert stat.S_IMODE(os.stat(project.state_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(project.state_path.parent).st_mode) == 0o700
    state = project.check_state_schema()
    assert set(state["specs"]) == set(ids)
