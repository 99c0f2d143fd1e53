"""Two `reconciler apply` processes at once on one S3 state (moto in server mode): exactly one
holds the lock; the impatient other fails naming the holder and writes nothing; a patient one
waits and then finds nothing left to do; the state loses no update."""

import json
import os
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config
from moto_server import moto_server

BUCKET = "reconciler-state"
KEY = "radiology/state.json"


@pytest.fixture
def s3(tmp_path):
    with moto_server() as url:
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=url)
        client.create_bucket(Bucket=BUCKET)
        yield url, client


def test_two_applies_on_one_s3_state(example_project, emulator, s3):
    url, client = s3
    (example_project / "reconciler.yaml").write_text(
        (example_project / "reconciler.yaml").read_text()
        + f"state: {{backend: s3, bucket: {BUCKET}, key: {KEY}, region: us-east-1}}\n")
    env = dict(os.environ, AWS_ENDPOINT_URL_MEDICAL_IMAGING=emulator.url,
               AWS_ENDPOINT_URL_S3=url)
    env.pop("CI", None)

    def start(*args):
        return subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--auto-approve",
                                 *args], cwd=example_project, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    # The first run holds the lock for ~4.5 s: three slow updates, one at a time, so the
    # others (a second or so to start a Python process on a busy machine) meet it locked.
    emulator.faults.add("UpdateImageSetMetadata", "latency", seconds=1.5, times=3)
    first = start("--max-in-flight", "1")
    deadline = time.monotonic() + 30
    while "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix=KEY + ".lock"):
        assert time.monotonic() < deadline and first.poll() is None, "the first never locked"
        time.sleep(0.05)
    impatient = start("--lock-timeout", "0")
    patient = start("--lock-timeout", "60")
    out, err = impatient.communicate(timeout=60)
    assert impatient.returncode == 1
    assert "is locked by" in err and f"s3://{BUCKET}/{KEY}" in err
    assert first.wait(timeout=60) == 0, first.stderr.read()
    out, err = patient.communicate(timeout=60)
    assert patient.returncode == 0, err
    assert "Plan: 0 image sets to update, 3 unchanged" in out
    state = json.loads(client.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())
    records = {name: list(body["image_sets"]) for name, body in state["specs"].items()}
    assert sorted(records) == ["ct-small", "nm-bone", "sc-deid"]
    assert all(len(ids) == 1 for ids in records.values())
    # One image set at a time: a pending record before each write, the outcome after it;
    # none lost, none doubled, and the patient second run wrote nothing.
    assert state["serial"] == 6
    head = client.head_object(Bucket=BUCKET, Key=KEY)
    assert head.get("ServerSideEncryption") in ("AES256", "aws:kms")
    # every image set was written exactly once
    mi = boto3.client("medical-imaging", endpoint_url=emulator.url,
                      config=Config(inject_host_prefix=False))
    for image_set_id in emulator.image_set_ids:
        versions = mi.list_image_set_versions(datastoreId=emulator.datastore_id,
                                              imageSetId=image_set_id)["imageSetPropertiesList"]
        assert len(versions) in (1, 2)
    assert sum(len(mi.list_image_set_versions(
        datastoreId=emulator.datastore_id, imageSetId=i)["imageSetPropertiesList"]) == 2
        for i in emulator.image_set_ids) == 3
