"""The KMS key source end to end: reconciler.yaml says ``keys: {source: kms}``; the command
line talks to moto's KMS over HTTP (``AWS_ENDPOINT_URL_KMS``) and to the emulator. The state
and every saved plan hold only KMS ciphertexts of their data keys; another KMS key, or none,
opens neither; ``state rekey`` moves a state between KMS keys."""

from __future__ import annotations

import json

import boto3
import pydicom
import pytest
from moto_server import moto_server
from apply_support import EXAMPLES_DICOM
from keys_support import files_of, run_with
from plan_files import read_plan, sealed_envelope

from reconciler.states.kms import KmsKeySource

REGION = "us-east-1"
# Patient values the bundled DICOM holds and the example specs declare.
PHI = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).get(k))
              for f in EXAMPLES_DICOM.glob("*.dcm")
              for k in ("PatientName", "PatientID", "PatientBirthDate", "ReferringPhysicianName")}
             - {"None", ""}) + ["DOE^JANE", "19700101", "ACC-0042", "ANON^0001", "ANON0001",
                                "CT CHEST", "NM WHOLE BODY BONE", "reviewed"]


@pytest.fixture(scope="module")
def kms_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def kms(kms_url, monkeypatch):
    """Two KMS keys with aliases, reached by this process (and its children) through
    ``AWS_ENDPOINT_URL_KMS``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_url)
    client = boto3.client("kms", region_name=REGION, endpoint_url=kms_url)
    arns = {}
    for name in ("state", "other"):
        arn = client.create_key(Description=f"reconciler {name}")["KeyMetadata"]["Arn"]
        alias = f"alias/reconciler-{name}-{arn[-8:]}"
        client.create_alias(AliasName=alias, TargetKeyId=arn)
        arns[name] = (alias, arn)
    return arns


def _use(project, alias):
    project.write_config({**project.config, "region": REGION,
                          "keys": {"source": "kms", "kmsKeyId": alias}})


def test_plan_apply_drift_and_rekey_with_a_kms_key(project, ids, kms):
    (alias, arn), (other_alias, other_arn) = kms["state"], kms["other"]
    _use(project, alias)
    planned = run_with(project, "plan", "--out", "plan.json", "--detailed-exitcode", env={})
    assert planned.exit_code == 2, planned.stderr
    envelope = sealed_envelope(project.root / "plan.json")
    assert envelope["data_key"] == {**envelope["data_key"], "source": "kms", "kms_key_id": arn}
    sealed = (project.root / "plan.json").read_text()
    assert "CompressedSamples^CT1" in PHI and "DOE^JANE" in PHI       # the scan is armed
    assert [v for v in PHI if len(v) >= 4 and v in sealed] == []     # no patient value in it
    assert "DOE^JANE" in json.dumps(read_plan(project.root / "plan.json",
                                              KmsKeySource(alias, region=REGION)))
    assert run_with(project, "show", "plan.json", env={}).exit_code == 0
    applied = run_with(project, "apply", "plan.json", env={})
    assert applied.exit_code == 0, applied.stderr
    state = project.check_state_schema()
    assert state["keys"]["data_key"]["source"] == "kms"
    assert state["keys"]["data_key"]["kms_key_id"] == arn
    assert run_with(project, "drift", env={}).exit_code == 0

    # Another KMS key opens neither the state nor a plan.
    assert run_with(project, "plan", "--out", "plan2.json", env={}).exit_code == 0
    _use(project, other_alias)
    result = run_with(project, "drift", env={})
    assert result.exit_code == 1
    assert f"the state .reconciler/state.json (sealed with KMS key {arn})" in result.stderr
    assert "AccessDeniedException" in result.stderr
    shown = run_with(project, "show", "plan2.json", env={})
    assert shown.exit_code == 1 and f"sealed with KMS key {arn}" in shown.stderr
    # No KMS at all (an endpoint that does not answer): a clear error, nothing judged.
    _use(project, alias)
    result = run_with(project, "drift", env={"AWS_ENDPOINT_URL_KMS": "http://127.0.0.1:9",
                                             "AWS_MAX_ATTEMPTS": "1"})
    assert result.exit_code == 1 and f"KMS key {alias} could not be used" in result.stderr
    assert "in-sync" not in result.stdout

    # Rotate onto the other key: drift goes on under it, the old key no longer opens it.
    _use(project, other_alias)
    moved = run_with(project, "state", "rekey", "--from", f"kms:{alias}", env={})
    assert moved.exit_code == 0, moved.stderr
    assert f"now:    key generation 2 (id " in moved.stdout and other_arn in moved.stdout
    project.write_oob(ids["ct-small"], updatable={"Study": {"DICOM": {"StudyDescription": "X"}}})
    result = run_with(project, "drift", "--json", env={})
    assert result.exit_code == 2
    assert {i["spec"]: i["status"] for i in json.loads(result.stdout)["image_sets"]}[
        "ct-small"] == "drifted"
    _use(project, alias)
    assert run_with(project, "drift", env={}).exit_code == 1
    for path in files_of(project.state_path):
        assert json.loads(path.read_text())["keys"]["data_key"]["kms_key_id"] == other_arn
