"""Import jobs from S3 and EventBridge events, end to end against moto's server.

moto runs as a real HTTP server on a loopback port (S3, EventBridge and SQS in one process).
The emulator reads the import input from its S3 and writes the job's output there, and
publishes its events with PutEvents to moto's default event bus, where a rule sends them to an
SQS queue. Everything is reached as a client of the real service would: boto3 over HTTP.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import boto3
import pytest
from emulator_support import CT_STUDY, EXAMPLES_DICOM, NM_STUDY, OT_STUDY, Api

from moto_server import moto_server
from reconciler.emulator.events import ALL_DETAIL_TYPES
from reconciler.emulator.server import ThreadedEmulator

ROLE = "arn:aws:iam::123456789012:role/ImportRole"
DICOM_FILES = sorted(EXAMPLES_DICOM.glob("*.dcm"))
STUDIES = 5                       # the studies in examples/dicom


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


def aws(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1")


class World:
    """One test's bucket, queue and rule on the shared moto server, and an emulator."""

    def __init__(self, moto_url: str, events: bool = True, **emulator_options):
        self.moto_url = moto_url
        self.s3 = aws("s3", moto_url)
        self.sqs = aws("sqs", moto_url)
        self.bus = aws("events", moto_url)
        self.name = f"t{uuid.uuid4().hex[:12]}"
        self.bucket = self.name
        self.s3.create_bucket(Bucket=self.bucket)
        self.queue_url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "QueueArn"])["Attributes"]["QueueArn"]
        self.bus.put_rule(Name=self.name, EventPattern=json.dumps({
            "source": ["aws.medical-imaging"]}))
        self.bus.put_targets(Rule=self.name, Targets=[{"Id": "q", "Arn": arn}])
        self.emulator = ThreadedEmulator(s3_endpoint=moto_url,
                                         events_endpoint=moto_url if events else None,
                                         **emulator_options)
        self.emulator.start()
        self.api = Api(self.emulator)
        self.received: list[dict] = []

    def close(self) -> None:
        self.emulator.stop()
        self.bus.remove_targets(Rule=self.name, Ids=["q"])
        self.bus.delete_rule(Name=self.name)

    def upload(self, prefix: str, files=DICOM_FILES, extra: dict[str, bytes] | None = None):
        for path in files:
            self.s3.put_object(Bucket=self.bucket, Key=f"{prefix}{path.name}",
                               Body=path.read_bytes())
        for key, body in (extra or {}).items():
            self.s3.put_object(Bucket=self.bucket, Key=f"{prefix}{key}", Body=body)

    def start_import(self, prefix: str = "in/", out: str = "out/", **kw) -> str:
        return self.api.client.start_dicom_import_job(
            datastoreId=self.api.ds, dataAccessRoleArn=ROLE,
            inputS3Uri=f"s3://{self.bucket}/{prefix}", outputS3Uri=f"s3://{self.bucket}/{out}",
            **kw)["jobId"]

    def wait_job(self, job_id: str) -> dict:
        for _ in range(1000):
            props = self.api.client.get_dicom_import_job(datastoreId=self.api.ds,
                                                         jobId=job_id)["jobProperties"]
            if props["jobStatus"] in ("COMPLETED", "FAILED"):
                return props
            time.sleep(0.01)
        raise AssertionError("the import job did not end")

    def read(self, s3_uri: str) -> bytes:
        bucket, _, key = s3_uri[len("s3://"):].partition("/")
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def receive_until(self, wanted: list[str]) -> list[dict]:
        """SQS messages until every detail-type in ``wanted`` (with multiplicity) arrived."""
        missing = list(wanted)
        for attempt in range(100):
            if not missing:
                return self.received
            # moto delivers to the queue inside PutEvents: once the emulator's publisher has
            # sent everything, the messages are there (completion events may still be due).
            self.emulator.events.flush()
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=0)
            if not answer.get("Messages"):
                time.sleep(0.02)
            for message in answer.get("Messages", []):
                event = json.loads(message["Body"])
                self.received.append(event)
                if event["detail-type"] in missing:
                    missing.remove(event["detail-type"])
                self.sqs.delete_message(QueueUrl=self.queue_url,
                                        ReceiptHandle=message["ReceiptHandle"])
        raise AssertionError(f"never received {missing}")


@pytest.fixture
def world(moto_url):
    w = World(moto_url)
    yield w
    w.close()


def test_a_client_imports_searches_updates_and_hears_about_it(world):
    """The issue's 'done when': only the endpoint changed, everything through the APIs."""
    world.upload("in/", extra={"notes/README.txt": b"not a DICOM file"})
    job_id = world.start_import()
    props = world.wait_job(job_id)
    assert props["jobStatus"] == "COMPLETED"
    assert props["submittedAt"] <= props["endedAt"]
    out = f"s3://{world.bucket}/out/{world.api.ds}-DicomImport-{job_id}/"
    assert props["outputS3Uri"] == out                       # import_output_uri=job_folder
    manifest = json.loads(world.read(out + "job-output-manifest.json"))["jobSummary"]
    assert (manifest["numberOfScannedFiles"], manifest["numberOfImportedFiles"],
            manifest["numberOfFilesWithCustomerError"], manifest["numberOfGeneratedImageSets"]
            ) == (len(DICOM_FILES) + 1, len(DICOM_FILES), 1, STUDIES)
    assert manifest["successOutputS3Uri"] == out + "SUCCESS/"
    successes = [json.loads(line) for line in
                 world.read(out + "SUCCESS/success.ndjson").decode().splitlines()]
    assert sorted(s["inputFile"] for s in successes) == sorted(f"in/{p.name}"
                                                              for p in DICOM_FILES)
    assert all(s["importResponse"]["isPrimary"] for s in successes)
    [failure] = [json.loads(line) for line in
                 world.read(out + "FAILURE/failure.ndjson").decode().splitlines()]
    assert failure["inputFile"] == "in/notes/README.txt"
    assert failure["exception"]["exceptionType"] == "ValidationException"

    found = world.api.client.search_image_sets(datastoreId=world.api.ds, searchCriteria={
        "filters": [{"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": CT_STUDY}]}]})
    [summary] = found["imageSetsMetadataSummaries"]
    assert summary["isPrimary"] and summary["version"] == 1
    ct = summary["imageSetId"]
    assert ct in {s["imageSetId"] for s in manifest["imageSetsSummary"]}

    world.receive_until(["Import Job Submitted", "Import Job In Progress",
                         "Import Job Completed"] + ["Image Set Created"] * STUDIES)
    completed = next(e for e in world.received if e["detail-type"] == "Import Job Completed")
    assert completed["source"] == "aws.medical-imaging"
    assert completed["detail"]["jobId"] == job_id and completed["detail"]["outputS3Uri"] == out
    created = {e["detail"]["imagesetId"] for e in world.received
               if e["detail-type"] == "Image Set Created"}
    assert ct in created

    # Imports make primary image sets: a Patient change to one goes study-wide, as any
    # client's must under the default (primary_restricted_levels=patient_series).
    world.api.update(ct, {"Patient": {"DICOM": {"PatientName": "DOE^JANE"}}},
                     include_study=True)
    world.receive_until(["Image Set Updating", "Image Set Updated"])
    updated = next(e for e in world.received if e["detail-type"] == "Image Set Updated")
    assert updated["detail"] == {
        "imagingVersion": "1.0", "isPrimary": True, "imageSetVersion": "2",
        "datastoreId": world.api.ds, "imagesetId": ct, "imageSetState": "ACTIVE",
        "imageSetWorkflowStatus": "UPDATED"}
    assert updated["resources"] == [
        f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{world.api.ds}"
        f"/imageset/{ct}"]
    log = world.emulator.app  # the admin endpoint, over HTTP
    import urllib.request
    with urllib.request.urlopen(f"{world.emulator.url}/_emulator/events?flush=true") as r:
        body = json.load(r)
    assert log is not None and body["region"] == "us-east-1"
    sent = [rec for rec in body["events"] if rec["event"]["detail-type"] == "Image Set Updated"]
    assert sent and sent[0]["delivery"] == "sent"


def test_imported_metadata_carries_image_frames_for_pixel_data(world):
    world.upload("frames/")
    world.wait_job(world.start_import("frames/"))
    for image_set_id in world.emulator.backend.image_sets:
        doc = world.api.meta(image_set_id)
        for series in doc["Study"]["Series"].values():
            for instance in series["Instances"].values():
                has_pixels = "Rows" in instance["DICOM"]
                assert bool(instance["ImageFrames"]) == has_pixels
                for frame in instance["ImageFrames"]:
                    assert len(frame["ID"]) == 32 and frame["FrameSizeInBytes"] > 0


def _image_set_of(api: Api, study: str, primary: bool | None = None) -> list[dict]:
    found = api.client.search_image_sets(datastoreId=api.ds, searchCriteria={"filters": [
        {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": study}]}]})
    return [s for s in found["imageSetsMetadataSummaries"]
            if primary is None or s["isPrimary"] is primary]


def test_reimport_and_conflicting_import_follow_the_guide(world):
    sc = [p for p in DICOM_FILES if p.name.startswith("SC_rgb")]  # one OT study, one series
    world.upload("ot1/", files=sc[:1])
    world.wait_job(world.start_import("ot1/"))
    [first] = _image_set_of(world.api, OT_STUDY)
    assert first["isPrimary"]
    ot_id = first["imageSetId"]
    # The series' other instances, in a second job, join the same primary image set.
    world.upload("ot2/", files=sc[1:])
    world.wait_job(world.start_import("ot2/"))
    [again] = _image_set_of(world.api, OT_STUDY)
    assert (again["imageSetId"], again["version"]) == (ot_id, 2)
    assert len(world.api.meta(ot_id)["Study"]["Series"].popitem()[1]["Instances"]) == 3
    # An instance imported again overwrites the stored one: a new version, no new image set.
    props = world.wait_job(world.start_import("ot1/"))
    summary = json.loads(world.read(props["outputS3Uri"] + "job-output-manifest.json"))
    assert summary["jobSummary"]["imageSetsSummary"] == [{
        "imageSetId": ot_id, "imageSetVersion": 3, "isPrimary": True,
        "numberOfMatchedSOPInstances": 1}]
    assert [s["imageSetId"] for s in _image_set_of(world.api, OT_STUDY)] == [ot_id]
    # Data that conflicts with the primary image set becomes a non-primary image set.
    final = world.api.apply(ot_id, {"Patient": {"DICOM": {"PatientName": "EDITED^NAME"}}},
                            include_study=True)      # a primary image set: study-wide
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    world.wait_job(world.start_import("ot1/"))
    [non_primary] = _image_set_of(world.api, OT_STUDY, primary=False)
    assert non_primary["imageSetId"] != ot_id
    # So does the NM study's second file: its Series elements disagree with the first's.
    nm = [p for p in DICOM_FILES if p.name.startswith("JPEG")]
    for i, path in enumerate(nm):
        world.upload(f"nm{i}/", files=[path])
        world.wait_job(world.start_import(f"nm{i}/"))
    assert sorted(s["isPrimary"] for s in _image_set_of(world.api, NM_STUDY)) == [False, True]
    world.receive_until(["Image Set Created"] * 4 + ["Image Set Updated"] * 3)
    flags = [e["detail"]["isPrimary"] for e in world.received
             if e["detail-type"] == "Image Set Created"]
    assert flags == [True, False, True, False]


def test_a_job_whose_input_cannot_be_read_fails_with_an_event(world):
    job_id = world.api.client.start_dicom_import_job(
        datastoreId=world.api.ds, dataAccessRoleArn=ROLE,
        inputS3Uri="s3://no-such-bucket-here/in/", outputS3Uri=f"s3://{world.bucket}/out/",
        jobName="broken")["jobId"]
    props = world.wait_job(job_id)
    assert props["jobStatus"] == "FAILED" and "NoSuchBucket" in props["message"]
    world.receive_until(["Import Job Failed"])
    jobs = world.api.client.list_dicom_import_jobs(datastoreId=world.api.ds,
                                                   jobStatus="FAILED")["jobSummaries"]
    assert [j["jobId"] for j in jobs] == [job_id]


def test_all_nineteen_event_types(world):
    """Each documented detail-type, produced by the operation it belongs to."""
    api, client = world.api, world.api.client
    world.upload("all/", files=[p for p in DICOM_FILES if p.name.startswith("SC_rgb")])
    world.wait_job(world.start_import("all/"))
    [ot] = [s["imageSetId"] for s in _image_set_of(api, OT_STUDY)]
    # ot is primary (imported): its Patient changes go study-wide; the first must succeed
    # ("Image Set Updated"), the second fails by the injected fault only.
    assert api.apply(ot, {"Patient": {"DICOM": {"PatientName": "A^B"}}}, include_study=True)[
        "imageSetWorkflowStatus"] == "UPDATED"
    api.emulator.faults.add("UpdateImageSetMetadata", "update_failed", times=1)
    failed_update = api.apply(ot, {"Patient": {"DICOM": {"PatientName": "C^D"}}},
                              include_study=True)
    assert failed_update["imageSetWorkflowStatus"] == "UPDATE_FAILED"
    assert "cannot be updated" not in failed_update.get("message", "")
    copy = client.copy_image_set(datastoreId=api.ds, sourceImageSetId=ot,
                                 copyImageSetInformation={"sourceImageSet": {
                                     "latestVersionId": api.latest(ot)}})
    copy_id = copy["destinationImageSetProperties"]["imageSetId"]
    api.wait(copy_id)
    api.wait(ot)
    api.emulator.faults.add("CopyImageSet", "update_failed", times=1)
    client.copy_image_set(datastoreId=api.ds, sourceImageSetId=ot,
                          copyImageSetInformation={"sourceImageSet": {
                              "latestVersionId": api.latest(ot)}})
    api.wait(ot)
    client.delete_image_set(datastoreId=api.ds, imageSetId=copy_id)
    api.wait(copy_id)
    created = client.create_datastore(datastoreName="events")["datastoreId"]
    while client.get_datastore(datastoreId=created)["datastoreProperties"][
            "datastoreStatus"] != "ACTIVE":
        time.sleep(0.01)
    client.delete_datastore(datastoreId=created)
    api.emulator.faults.add("CreateDatastore", "update_failed", times=1)
    failed = client.create_datastore(datastoreName="fails")["datastoreId"]
    client.get_datastore(datastoreId=failed)
    client.start_dicom_import_job(datastoreId=api.ds, dataAccessRoleArn=ROLE,
                                  inputS3Uri="s3://no-such-bucket-here/x/",
                                  outputS3Uri=f"s3://{world.bucket}/out/")
    world.receive_until(list(ALL_DETAIL_TYPES))
    assert len(ALL_DETAIL_TYPES) == 19
    copying = next(e for e in world.received if e["detail-type"] == "Image Set Copying")
    assert copying["detail"]["sourceImageSetArn"].endswith(f"/imageset/{ot}")
    assert copying["detail"]["imageSetState"] == "LOCKED"


def test_events_are_best_effort_when_eventbridge_is_unreachable(moto_url):
    with socket.socket() as sock:           # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], events_endpoint=dead) as emu:
        api = Api(emu)
        ct = api.image_set(CT_STUDY)
        assert api.apply(ct, {"Patient": {"DICOM": {"PatientName": "X^Y"}}},
                         include_study=True)["imageSetWorkflowStatus"] == "UPDATED"  # primary
        emu.events.flush()
        records = emu.events.records("Image Set Updated")
        assert records and records[0]["delivery"] == "failed"


def test_without_an_events_endpoint_events_are_only_logged(emulator):
    api = Api(emulator)
    ct = api.image_set(CT_STUDY)
    final = api.apply(ct, {"Patient": {"DICOM": {"PatientName": "X^Y"}}},
                      include_study=True)           # a seeded, primary image set: study-wide
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    kinds = [r["event"]["detail-type"] for r in emulator.events.records()]
    assert kinds == ["Image Set Updating", "Image Set Updated"]
    assert {r["delivery"] for r in emulator.events.records()} == {"not_published"}


def test_import_with_the_aws_cli(world):
    import os
    import subprocess
    import sys

    cli = Path(sys.executable).with_name("aws")
    if not cli.exists():
        pytest.skip("the AWS CLI is not installed")
    env = dict(os.environ, AWS_DISABLE_HOST_PREFIX_INJECTION="true")

    def aws_cli(*args: str, endpoint: str) -> dict | None:
        done = subprocess.run([str(cli), *args, "--endpoint-url", endpoint, "--output", "json"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    world.upload("cli/", files=[EXAMPLES_DICOM / "CT_small.dcm"])
    started = aws_cli("medical-imaging", "start-dicom-import-job", "--job-name", "cli-import",
                      "--datastore-id", world.api.ds, "--data-access-role-arn", ROLE,
                      "--input-s3-uri", f"s3://{world.bucket}/cli/",
                      "--output-s3-uri", f"s3://{world.bucket}/cli-out/",
                      endpoint=world.emulator.url)
    assert started["jobStatus"] == "SUBMITTED"
    world.wait_job(started["jobId"])
    props = aws_cli("medical-imaging", "get-dicom-import-job", "--datastore-id", world.api.ds,
                    "--job-id", started["jobId"], endpoint=world.emulator.url)["jobProperties"]
    assert (props["jobStatus"], props["jobName"]) == ("COMPLETED", "cli-import")
    summary = json.loads(world.read(props["outputS3Uri"] + "job-output-manifest.json"))
    assert summary["jobSummary"]["numberOfImportedFiles"] == 1


def test_serve_command_takes_the_s3_events_and_region_options(moto_url):
    """`reconciler emulator serve --s3-endpoint --events-endpoint --region`, a real process."""
    import signal
    import subprocess
    import sys

    w = World(moto_url, events=False)        # bucket, queue and rule; its own emulator unused
    w.emulator.stop()
    w.upload("serve/", files=[EXAMPLES_DICOM / "MR_small.dcm"])
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "emulator", "serve",
                             "--update-delay", "0", "--s3-endpoint", moto_url,
                             "--events-endpoint", moto_url, "--region", "us-east-1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        client = medical_imaging_client_for(url)
        ds = client.list_datastores()["datastoreSummaries"][0]["datastoreId"]
        job = client.start_dicom_import_job(datastoreId=ds, dataAccessRoleArn=ROLE,
                                            inputS3Uri=f"s3://{w.bucket}/serve/",
                                            outputS3Uri=f"s3://{w.bucket}/out/")["jobId"]
        for _ in range(1000):
            status = client.get_dicom_import_job(datastoreId=ds, jobId=job)[
                "jobProperties"]["jobStatus"]
            if status in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.01)
        assert status == "COMPLETED"
        missing = ["Import Job Completed", "Image Set Created"]
        for _ in range(200):
            for message in w.sqs.receive_message(QueueUrl=w.queue_url, MaxNumberOfMessages=10,
                                                 WaitTimeSeconds=0).get("Messages", []):
                kind = json.loads(message["Body"])["detail-type"]
                if kind in missing:
                    missing.remove(kind)
            if not missing:
                break
            time.sleep(0.02)
        assert missing == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
        w.bus.remove_targets(Rule=w.name, Ids=["q"])
        w.bus.delete_rule(Name=w.name)


def medical_imaging_client_for(url: str):
    from emulator_support import medical_imaging_client

    return medical_imaging_client(url)


def test_jobs_persist_and_a_job_cut_off_by_a_restart_is_failed(tmp_path):
    data = str(tmp_path / "data")
    with ThreadedEmulator(data_dir=data) as emu:
        emu.backend.import_runner = lambda job_id: None     # the job never starts running
        api = Api(emu)
        job = api.client.start_dicom_import_job(
            datastoreId=api.ds, dataAccessRoleArn=ROLE, clientToken="same-token",
            inputS3Uri="s3://bucket-a/in/", outputS3Uri="s3://bucket-a/out/")["jobId"]
        again = api.client.start_dicom_import_job(        # idempotent on clientToken
            datastoreId=api.ds, dataAccessRoleArn=ROLE, clientToken="same-token",
            inputS3Uri="s3://bucket-a/in/", outputS3Uri="s3://bucket-a/out/")["jobId"]
        assert again == job
        assert api.client.get_dicom_import_job(datastoreId=api.ds, jobId=job)[
            "jobProperties"]["jobStatus"] == "SUBMITTED"
    with ThreadedEmulator(data_dir=data) as emu:
        api = Api(emu)
        props = api.client.get_dicom_import_job(datastoreId=api.ds, jobId=job)["jobProperties"]
        assert props["jobStatus"] == "FAILED" and props["endedAt"]
        assert "stopped" in props["message"]
