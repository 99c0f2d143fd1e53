"""SIGKILL in the middle of a state write of a real ``reconciler apply`` process.

``tests/apply/test_crash_safety.py`` kills a real apply between image sets, during a write and
while an update is LOCKED; ``tests/states`` covers a crash before the rename at the state layer
only. Here a real ``apply`` (a child process, over HTTP against the emulator) is SIGKILLed just
before or just after the Nth atomic rename into the state's directory, by a wrapper script
that wraps ``os.replace`` before reconciler is imported (``kill_at_rename.py``; no test hook
in product code). With four image sets applied one at a time the renames are: the first
state write (no backup yet), then per image set the backup and the state, so the kill points
cover the very first write, a backup, a state after a backup, and the last write of the run.

After each kill: the state file and its backup are each exactly the last snapshot renamed in
(never torn, never a half-written temp), parse and validate against schemas/state.v1; every
record names a version holding the desired values; the dead holder's lock is left and seen
as stale. Then a plain ``apply`` re-run takes the lock over and converges: every image set
holds the desired metadata with exactly two versions (one UpdateImageSetMetadata each over
both runs), everything is recorded, and no lock or temp file is left.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import jsonschema
import pytest
import yaml
from botocore.config import Config

from reconciler.emulator.server import ThreadedEmulator
from reconciler.states.local import LocalBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "tests" / "data" / "aws-sample-metadata.json"
STATE_SCHEMA = json.loads((REPO_ROOT / "schemas" / "state.v1.schema.json").read_text())
WRAPPER = Path(__file__).with_name("kill_at_rename.py")

FLEET = 4
PATIENT = "KILLWRITE-0001"
DESIRED = {"PatientName": "FLEET^RENAMED", "StudyDescription": "STATE WRITE SURVIVED"}
FAST_QUOTAS = {op: 1000 for op in ("UpdateImageSetMetadata", "GetImageSet",
                                   "GetImageSetMetadata", "SearchImageSets",
                                   "ListImageSetVersions")}

# (N, before|after): renames are 1 = state (the first write: the pending record of the first
# image set), then 2k = backup, 2k+1 = state (pending records and outcomes alternate).
KILL_POINTS = [(1, "before"), (1, "after"), (2, "before"), (2, "after"),
               (3, "before"), (3, "after"), (2 * FLEET - 1, "before"), (2 * FLEET - 1, "after")]


def _fleet_documents() -> list[dict]:
    base = json.loads(SAMPLE.read_text())
    for key in ("DatastoreID", "ImageSetID"):
        base.pop(key, None)
    docs = []
    for i in range(FLEET):
        doc = copy.deepcopy(base)
        doc["Patient"]["DICOM"].update({"PatientName": f"KILL^PATIENT{i:02d}",
                                        "PatientID": PATIENT})
        doc["Study"]["DICOM"].update({"StudyInstanceUID": f"1.2.826.0.1.3680043.10.77.{i + 1}",
                                      "StudyDescription": f"BEFORE {i:02d}"})
        docs.append(doc)
    return docs


class Fleet:
    def __init__(self, root: Path, emu: ThreadedEmulator):
        self.root, self.emu = root, emu
        self.config = root / "reconciler.yaml"
        self.state_path = root / ".reconciler" / "state.json"
        self.backup_path = self.state_path.with_name("state.json.backup")
        self.lock_path = self.state_path.with_name("state.json.lock")
        self.client = boto3.client("medical-imaging", endpoint_url=emu.url,
                                   region_name="us-east-1",
                                   config=Config(inject_host_prefix=False))
        (root / "specs").mkdir(parents=True)
        self.config.write_text(yaml.safe_dump({"datastoreId": emu.datastore_id,
                                               "specs": ["specs"], "quotas": FAST_QUOTAS}))
        (root / "specs" / "fleet.yaml").write_text(yaml.safe_dump({
            "apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
            "metadata": {"name": "kill-fleet"},
            "target": {"selector": {"DICOMPatientId": PATIENT}},
            "attributes": {"Patient": {"PatientName": DESIRED["PatientName"]},
                           "Study": {"StudyDescription": DESIRED["StudyDescription"]}}},
            sort_keys=False))
        # Counts every UpdateImageSetMetadata that reaches the emulator (a no-op rule).
        self.updates = emu.faults.add("UpdateImageSetMetadata", "latency", seconds=0)

    def apply(self, *prefix: str, env: dict | None = None) -> tuple[int, int, str]:
        """``python PREFIX... apply`` over the fleet, one image set at a time, as a child
        process: (its pid, its exit status, its stderr)."""
        full_env = {k: v for k, v in os.environ.items() if k != "CI"}
        full_env.update(env or {}, AWS_ENDPOINT_URL_MEDICAL_IMAGING=self.emu.url)
        proc = subprocess.Popen([sys.executable, *prefix, "--no-color", "--config",
                                 str(self.config), "apply", "--auto-approve", "--max-in-flight",
                                 "1"], cwd=self.root, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=120)
        return proc.pid, proc.returncode, err

    def versions(self, image_set_id: str) -> list[str]:
        r = self.client.list_image_set_versions(datastoreId=self.emu.datastore_id,
                                                imageSetId=image_set_id)
        return sorted((v["versionId"] for v in r["imageSetPropertiesList"]), key=int)

    def desired_in(self, image_set_id: str, version: str) -> bool:
        import gzip
        r = self.client.get_image_set_metadata(datastoreId=self.emu.datastore_id,
                                               imageSetId=image_set_id, versionId=version)
        doc = json.loads(gzip.decompress(r["imageSetMetadataBlob"].read()))
        return (doc["Patient"]["DICOM"].get("PatientName") == DESIRED["PatientName"]
                and doc["Study"]["DICOM"].get("StudyDescription") == DESIRED["StudyDescription"])


@pytest.fixture
def fleet(tmp_path):
    seeds = []
    for i, doc in enumerate(_fleet_documents()):
        path = tmp_path / "seeds" / f"study-{i}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(doc))
        seeds.append(str(path))
    # Updates complete at once (the next call sees them UPDATED): no polling to wait through.
    with ThreadedEmulator(seeds=seeds, update_delay=0) as emu:
        assert len(emu.image_set_ids) == FLEET
        yield Fleet(tmp_path / "project", emu)


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _valid_state(path: Path) -> dict:
    doc = json.loads(path.read_bytes())                      # parses
    jsonschema.Draft202012Validator(STATE_SCHEMA).validate(doc)   # and is a state
    return doc


def _records(doc: dict) -> dict:
    return doc["specs"].get("kill-fleet", {}).get("image_sets", {})


@pytest.mark.parametrize("at,when", KILL_POINTS, ids=[f"{w}-rename-{n}" for n, w in KILL_POINTS])
def test_sigkill_at_a_state_rename_then_rerun_converges(fleet, tmp_path, at, when):
    log = tmp_path / "renames.log"
    pid, status, err = fleet.apply(str(WRAPPER), env={
        "KILL_RENAME_DIR": str(fleet.state_path.parent), "KILL_RENAME_AT": str(at),
        "KILL_RENAME_WHEN": when, "KILL_RENAME_LOG": str(log)})
    assert status == -9, (status, err[-2000:])
    renames = [json.loads(line) for line in log.read_text().splitlines()]
    assert renames[-1]["n"] == at and renames[-1]["done"] is (when == "after")

    # 1. Each file is exactly the last snapshot renamed into it: old or new, never torn.
    for path in (fleet.state_path, fleet.backup_path):
        landed = [r["sha256"] for r in renames if r["dst"] == path.name and r["done"]]
        assert _sha(path) == (landed[-1] if landed else None), path.name
        if path.exists():
            _valid_state(path)
    assert {r["dst"] for r in renames} <= {"state.json", "state.json.backup"}

    # 2. What is recorded is true: every record names a completed version with our values.
    state = _valid_state(fleet.state_path) if fleet.state_path.exists() else None
    recorded = _records(state) if state else {}
    for image_set_id, record in recorded.items():
        if record["version_after"] is None:
            # A pending record, saved before a write went out: it names the version the
            # write went on (where rollback must go back to), whether or not it landed.
            assert record["version_before"] == "1"
            continue
        assert record["version_after"] == "2"
        assert fleet.desired_in(image_set_id, "2")
    completed = {i: r for i, r in recorded.items() if r["version_after"] is not None}
    writes_before = fleet.updates.fired
    assert len(completed) <= writes_before           # never recorded ahead of the service

    # 3. The dead process's lock is still there, and known to be stale.
    backend = LocalBackend(fleet.state_path)
    holder = backend.lock_info()
    assert holder is not None and (holder.pid, holder.operation) == (pid, "apply")
    assert backend.lock_is_stale() is True

    # 4. A plain re-run takes the lock over and converges, writing each image set once.
    _, status, err = fleet.apply("-m", "reconciler")
    assert status == 0, err[-2000:]
    assert fleet.updates.fired == FLEET              # one update per image set, both runs
    final = _valid_state(fleet.state_path)
    records = _records(final)
    assert set(records) == set(fleet.emu.image_set_ids)
    for image_set_id in fleet.emu.image_set_ids:
        assert fleet.versions(image_set_id) == ["1", "2"], image_set_id
        assert fleet.desired_in(image_set_id, "2")
        assert records[image_set_id]["version_after"] == "2"
        assert records[image_set_id]["version_before"] == "1"    # rollback goes back to 1
    for image_set_id, record in completed.items():  # what the killed run recorded is kept
        assert records[image_set_id] == record
    if len(completed) < FLEET:                       # the re-run recorded the rest
        assert final["serial"] > (state["serial"] if state else 0)
    else:                                            # nothing left to do: nothing written
        assert final == state
    assert not fleet.lock_path.exists()
    leftovers = sorted(p.name for p in fleet.state_path.parent.iterdir()
                       if p.name not in ("state.json", "state.json.backup"))
    assert leftovers == []
