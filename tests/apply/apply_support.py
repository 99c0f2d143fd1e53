"""Helpers for the end-to-end tests of apply, state, drift and rollback.

Everything goes to the emulator over HTTP: the reconciler through its command line (in process
with click's CliRunner, or as a real subprocess), and the "second writer" through plain boto3,
exactly as another tool or a person with the AWS CLI would change an image set behind our back.
The emulator's Python API is used only to inject faults, seed data and finish in-flight work.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import yaml
from botocore.config import Config
from cli_entry import cli_entry
from click.testing import CliRunner
from matrix import readings

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DICOM = REPO_ROOT / "examples" / "dicom"
EXAMPLE_SPECS = REPO_ROOT / "examples" / "specs"
SAMPLE_METADATA = REPO_ROOT / "tests" / "data" / "aws-sample-metadata.json"
STATE_SCHEMA = REPO_ROOT / "schemas" / "state.v1.schema.json"
REPORT_SCHEMA = REPO_ROOT / "schemas" / "report.v1.schema.json"
RECONCILER = Path(sys.executable).with_name("reconciler")

# The studies of examples/dicom that the example specs select (examples/specs/*.yaml).
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
NM_STUDY = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"
SC_STUDY = "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114"
EXAMPLE_STUDIES = {"ct-small": CT_STUDY, "nm-bone": NM_STUDY, "sc-deid": SC_STUDY}

# Raised client-side quotas: the published UpdateImageSetMetadata rate (0.25/s) would make
# every test wait four seconds per image set.
FAST_QUOTAS = {op: 1000 for op in ("UpdateImageSetMetadata", "GetImageSet", "GetImageSetMetadata",
                                   "SearchImageSets", "ListImageSetVersions")}
GENERATED = ("SchemaVersion", "DatastoreID", "ImageSetID")
# The SchemaVersion a second writer's update document carries: the form the session's reading
# accepts (the schema_version behaviour: any, the number 1.1, or the string "1.1").
READING = readings.current()
SCHEMA_VERSION = readings.schema_version(READING)
# Under remove_instance_needs_force=true the example specs are written without nm-bone's
# instance removal (readings.spec_for_reading): the service refuses it on a primary image set.
INSTANCE_REMOVAL_REFUSED = readings.refuses_instance_removal(READING)
# Under primary_restriction_include_study=refused no writer can change a Patient element of a
# (primary) seed: the example specs are written without their Patient blocks
# (readings.spec_for_reading), and a second writer changes something else.
PATIENT_CHANGES_REFUSED = readings.refuses_patient_changes(READING)
# Seconds a completed version takes to show in SearchImageSets (search_index_lag; 0 by default).
INDEX_LAG = READING.behaviour("search_index_lag")


@dataclass(frozen=True)
class Element:
    """A Patient- or Study-level DICOM element of a metadata document."""
    level: str
    key: str
    vr: str

    @property
    def path(self) -> str:
        return f"{self.level}.{self.key}"

    def of(self, document: dict) -> Any:
        return document[self.level]["DICOM"].get(self.key)


def dicom_update(*pairs: tuple[Element, Any]) -> dict:
    """The DICOM part of an update document setting each element to its value."""
    doc: dict[str, Any] = {}
    for element, value in pairs:
        doc.setdefault(element.level, {"DICOM": {}})["DICOM"][element.key] = value
    return doc


def spec_attributes(*pairs: tuple[Element, Any]) -> dict:
    """A spec's ``attributes`` setting each element to its value."""
    doc: dict[str, Any] = {}
    for element, value in pairs:
        doc.setdefault(element.level, {})[element.key] = value
    return doc


# The element of ct-small that tests change behind its back (a second writer), with the value
# the spec wants, and an element of the same level that ct-small does not manage. Where no
# writer can change a Patient element of a primary seed (PATIENT_CHANGES_REFUSED, ct-small
# written without its Patient block), Study elements stand in.
if PATIENT_CHANGES_REFUSED:
    CT_MANAGED, CT_WANTED = Element("Study", "AccessionNumber", "SH"), "ACC-0042"
    CT_UNMANAGED = Element("Study", "AdditionalPatientHistory", "LT")
else:
    CT_MANAGED, CT_WANTED = Element("Patient", "PatientName", "PN"), "DOE^JANE"
    CT_UNMANAGED = Element("Patient", "PatientSex", "CS")


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def check_report(doc: dict) -> dict:
    """An apply / rollback ``--json`` report, validated against its schema."""
    jsonschema.Draft202012Validator(json.loads(REPORT_SCHEMA.read_text())).validate(doc)
    return doc


def client_for(url: str):
    return boto3.client("medical-imaging", endpoint_url=url, region_name="us-east-1",
                        config=Config(inject_host_prefix=False,
                                      retries={"mode": "standard", "max_attempts": 5}))


class Project:
    """A reconciler project (reconciler.yaml, specs/, .reconciler/state.json) in a temporary
    directory, wired to one emulator."""

    def __init__(self, root: Path, emu, *, extra_config: dict | None = None,
                 example_specs: bool = True):
        self.root = root
        self.emu = emu
        self.url = emu.url
        self.client = client_for(emu.url)
        self.specs_dir = root / "specs"
        self.specs_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "reconciler.yaml"
        self.state_path = root / ".reconciler" / "state.json"
        self.datastore_id = emu.datastore_id
        config = {"datastoreId": self.datastore_id, "specs": ["specs"], "quotas": FAST_QUOTAS}
        config.update(extra_config or {})
        self.write_config(config)
        if example_specs:
            for path in sorted(EXAMPLE_SPECS.glob("*.yaml")):
                # (nm-bone without its instance removal where the reading refuses it)
                (self.specs_dir / path.name).write_text(
                    readings.spec_for_reading(READING, path.read_text()))

    # -- files -----------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_spec(self, name: str, attributes: dict, *, image_set_id: str | None = None,
                   selector: dict | None = None, file: str | None = None,
                   force: bool = False) -> Path:
        target = {"imageSetId": image_set_id} if image_set_id else {"selector": selector}
        doc = {"apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
               "metadata": {"name": name}, "target": target, "attributes": attributes}
        if force:
            doc["force"] = True
        path = self.specs_dir / (file or f"{name}.yaml")
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def state(self) -> dict:
        return json.loads(self.state_path.read_bytes())

    def record(self, spec: str, image_set_id: str) -> dict | None:
        if not self.state_path.exists():
            return None
        return self.state()["specs"].get(spec, {}).get("image_sets", {}).get(image_set_id)

    def check_state_schema(self) -> dict:
        doc = self.state()
        jsonschema.Draft202012Validator(json.loads(STATE_SCHEMA.read_text())).validate(doc)
        return doc

    # -- the command line ------------------------------------------------------------------
    def env(self, ci: bool = False) -> dict[str, str | None]:
        return {"AWS_ENDPOINT_URL_MEDICAL_IMAGING": self.url, "CI": "true" if ci else None}

    def run(self, *args: str, ci: bool = False, input: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        """``reconciler --config reconciler.yaml ARGS`` in process; stdin is not a terminal.
        ``env``: more environment variables for this run."""
        result = CliRunner().invoke(cli_entry(), ["--no-color", "--config", str(self.config_path),
                                               *args],
                                    env={**self.env(ci), **(env or {})}, input=input,
                                    catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        """The installed ``reconciler`` console script as a real process."""
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"] = self.url
        return subprocess.Popen([str(RECONCILER), "--no-color", "--config",
                                 str(self.config_path), *args],
                                cwd=self.root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)

    # -- HealthImaging through boto3 -------------------------------------------------------
    def image_set_of(self, study_uid: str) -> str:
        """The one image set of a seeded study. Waits while SearchImageSets does not list it
        yet: under a lagging index (the search_index_lag behaviour) even seeded image sets
        show only after the lag."""
        def search():
            r = self.client.search_image_sets(
                datastoreId=self.datastore_id,
                searchCriteria={"filters": [{"operator": "EQUAL", "values": [
                    {"DICOMStudyInstanceUID": study_uid}]}]})
            return [s["imageSetId"] for s in r["imageSetsMetadataSummaries"]]
        found = wait_for(search, timeout=30, interval=0.05, what=f"study {study_uid} in search")
        assert len(found) == 1, found
        return found[0]

    def versions(self, image_set_id: str) -> list[dict]:
        items, token = [], None
        while True:
            kw = {"nextToken": token} if token else {}
            r = self.client.list_image_set_versions(datastoreId=self.datastore_id,
                                                    imageSetId=image_set_id, **kw)
            items += r["imageSetPropertiesList"]
            token = r.get("nextToken")
            if not token:
                return sorted(items, key=lambda v: int(v["versionId"]))

    def version_count(self, image_set_id: str) -> int:
        return len(self.versions(image_set_id))

    def latest(self, image_set_id: str) -> dict:
        return self.client.get_image_set(datastoreId=self.datastore_id, imageSetId=image_set_id)

    def metadata(self, image_set_id: str, version: str | int | None = None) -> dict:
        kw = {"versionId": str(version)} if version is not None else {}
        r = self.client.get_image_set_metadata(datastoreId=self.datastore_id,
                                               imageSetId=image_set_id, **kw)
        return json.loads(gzip.decompress(r["imageSetMetadataBlob"].read()))

    def wait_unlocked(self, image_set_id: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.latest(image_set_id)
            if r["imageSetState"] != "LOCKED":
                return r
            assert time.monotonic() < deadline, f"{image_set_id} stayed LOCKED"
            time.sleep(0.01)

    def write_oob(self, image_set_id: str, updatable: dict | None = None,
                  removable: dict | None = None, wait: bool = True,
                  schema_version: Any = SCHEMA_VERSION) -> str:
        """A second writer: one UpdateImageSetMetadata through boto3 against the latest
        version; returns the new version id (completed unless ``wait`` is false). On a
        primary image set a Patient/Study change goes study-wide (includeStudyImageSets), as
        any writer's must where the service restricts those levels."""
        found = self.wait_unlocked(image_set_id)
        latest = found["versionId"]
        study_wide = bool(found.get("isPrimary")) and any(
            (doc or {}).get("Patient") or ((doc or {}).get("Study") or {}).get("DICOM")
            for doc in (updatable, removable))

        dicom: dict[str, Any] = {}
        if updatable is not None:
            dicom["updatableAttributes"] = json.dumps({"SchemaVersion": schema_version, **updatable})
        if removable is not None:
            dicom["removableAttributes"] = json.dumps({"SchemaVersion": schema_version, **removable})
        r = self.client.update_image_set_metadata(
            datastoreId=self.datastore_id, imageSetId=image_set_id, latestVersionId=latest,
            updateImageSetMetadataUpdates={"DICOMUpdates": dicom},
            includeStudyImageSets=study_wide)
        if wait:
            done = self.wait_unlocked(image_set_id)
            assert done["imageSetWorkflowStatus"] == "UPDATED", done
        return r["latestVersionId"]

    def delete(self, image_set_id: str) -> None:
        self.wait_unlocked(image_set_id)
        self.client.delete_image_set(datastoreId=self.datastore_id, imageSetId=image_set_id)
        deadline = time.monotonic() + 10
        while self.latest(image_set_id)["imageSetState"] != "DELETED":
            assert time.monotonic() < deadline
            time.sleep(0.01)


# -- documents -----------------------------------------------------------------------------
def strip_generated(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for key in GENERATED:
        doc.pop(key, None)
    return doc


def without_paths(doc: dict, paths: list[tuple[str, ...]]) -> dict:
    """A copy of a metadata document with the given paths (tuples of keys) removed, and the
    service-generated top-level ids dropped: what must not change when only ``paths`` are
    managed."""
    doc = strip_generated(doc)
    for path in paths:
        node = doc
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return doc


def sample_documents(count: int, prefix: str = "1.2.826.0.1.3680043.10.1") -> list[dict]:
    """``count`` metadata documents derived from AWS's own sample, each its own study (so
    its own image set) and patient, with distinct, recognisable values."""
    base = json.loads(SAMPLE_METADATA.read_text())
    for key in ("DatastoreID", "ImageSetID"):
        base.pop(key, None)
    docs = []
    for i in range(count):
        doc = copy.deepcopy(base)
        doc["Patient"]["DICOM"].update({"PatientName": f"SAMPLE^PATIENT{i:02d}",
                                        "PatientID": f"MRN-7731-{i:04d}",
                                        "PatientBirthDate": f"1961031{i % 10}"})
        doc["Study"]["DICOM"].update({"StudyInstanceUID": f"{prefix}.{i + 1}",
                                      "StudyDescription": f"PELVIS STUDY {i:02d}",
                                      "AccessionNumber": f"ACC-5531-{i:04d}"})
        docs.append(doc)
    return docs


def seed_documents(tmp: Path, docs: list[dict]) -> list[str]:
    paths = []
    tmp.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        path = tmp / f"study-{i:02d}.json"
        path.write_text(json.dumps(doc))
        paths.append(str(path))
    return paths


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def saved_plan(project, name="plan.json") -> str:
    """`plan --out NAME` in the project (it must succeed); the plan file's path."""
    result = project.run("plan", "--out", name)
    assert result.exit_code == 0, result.stderr
    return str(project.root / name)
