"""reconciler watch, end to end: real processes against the emulator and moto's server.

The emulator publishes its EventBridge events with PutEvents to moto's default event bus, where
a rule (source aws.medical-imaging) sends them to an SQS queue, as a rule with an SQS target
does in AWS; ``reconciler watch`` runs as the installed console script and reaches SQS through
``AWS_ENDPOINT_URL_SQS``. Out-of-band writers use plain boto3. Messages that no emulator would
send (duplicates, old versions, garbage) are put on the queue with SendMessage, in the very
envelope EventBridge delivers.
"""

from __future__ import annotations

import json
import signal
import threading

import boto3
import pytest
from moto_server import moto_server
from apply_support import EXAMPLES_DICOM, Project, wait_for
from watch_support import Queue, counters, envelope, finish, of_type, settle, watch

from reconciler.emulator.server import ThreadedEmulator

@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def emu(moto_url):
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02,
                          events_endpoint=moto_url) as emulator:
        yield emulator


@pytest.fixture
def queue(moto_url):
    q = Queue(moto_url)
    yield q
    q.close()


def test_out_of_band_edit_is_detected_and_our_own_writes_cost_no_read(
        moto_url, queue, project, applied):
    # The queue (made before the apply) holds the events of our own apply (Updating/Updated
    # for the versions the state records): the watcher must not read anything for them.
    ct, nm = applied["ct-small"], applied["nm-bone"]
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "INTRUDER^EVE"}}})
    settle(project)
    assert queue.count() >= 7      # our apply's Updating/Updated of three, and the edit's
    count = counters(project, *applied.values())
    code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "1"))
    assert code == 2, err
    [found] = of_type(events, "drift_detected")
    assert (found["spec"], found["image_set_id"], found["status"]) == ("ct-small", ct, "drifted")
    assert [a["path"] for a in found["attributes"]] == ["Patient.PatientName"]
    assert "INTRUDER" not in err                      # logs never hold a value
    assert count[("GetImageSet", ct)].fired == 1
    assert count[("GetImageSetMetadata", ct)].fired == 1
    for other in (nm, applied["sc-deid"]):          # only their own versions' events
        assert count[("GetImageSet", other)].fired == 0
        assert count[("GetImageSetMetadata", other)].fired == 0
    assert queue.count() == 0                         # every message handled and deleted
    assert not of_type(events, "apply_start")         # self-heal is off by default


def test_self_heal_converges(project, applied, moto_url, queue):
    ct = applied["ct-small"]
    desired = project.metadata(ct)["Patient"]["DICOM"]["PatientName"]
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "INTRUDER^EVE"}}})
    settle(project)
    code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "1",
                                     "--self-heal"))
    assert code == 0, err
    assert of_type(events, "drift_detected")[0]["image_set_id"] == ct
    [done] = [e for e in of_type(events, "apply_complete") if e["image_set_id"] == ct]
    assert done["status"] == "applied"
    assert project.metadata(ct)["Patient"]["DICOM"]["PatientName"] == desired
    record = project.record("ct-small", ct)
    assert record["version_after"] == project.latest(ct)["versionId"] == done["version_after"]
    # The events of the healing write itself reach the queue afterwards: a second watcher
    # finds nothing to do, and reads nothing for them.
    settle(project)
    count = counters(project, ct)
    code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "1"))
    assert code == 0, err
    assert not of_type(events, "drift_detected")
    assert count[("GetImageSet", ct)].fired == 0


def test_duplicate_and_out_of_order_events_cost_one_check(project, applied, moto_url, queue):
    ct = applied["ct-small"]
    settle(project)
    queue.drain()
    version = int(project.write_oob(
        ct, updatable={"Study": {"DICOM": {"StudyDescription": "ELSEWHERE"}}}))
    settle(project)
    ds = project.datastore_id
    for v in (version, version, version - 1, version - 2):   # a duplicate, then older ones
        queue.send(envelope("Image Set Updated", ds, ct, v))
    count = counters(project, ct)
    code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "1"))
    assert code == 2, err
    assert len(of_type(events, "drift_detected")) == 1
    assert count[("GetImageSet", ct)].fired == 1
    assert count[("GetImageSetMetadata", ct)].fired == 1
    assert queue.count() == 0


def test_a_foreign_message_is_deleted_unread_and_a_failing_one_goes_to_the_dlq(
        project, applied, moto_url):
    q = Queue(moto_url, visibility=1, max_receives=1)
    try:
        settle(project)
        q.drain()
        ct = applied["ct-small"]
        q.send("PatientName=DOE^SECRET not an event")
        q.send(json.dumps({"source": "aws.s3", "detail-type": "Object Created",
                           "detail": {"key": "DOE^SECRET"}}))
        project.write_oob(ct, updatable={"Study": {"DICOM": {"StudyDescription": "ELSEWHERE"}}})
        settle(project)
        project.emu.faults.add("GetImageSet", "error", code="InternalServerException",
                               imageSetId=ct)
        code, events, err = finish(watch(project, moto_url, q, "--once", "--wait", "4"))
        assert code == 1, err
        assert "SECRET" not in err and "SECRET" not in json.dumps(events)
        assert err.count("is not a HealthImaging event") == 2
        assert "left in the queue" in err
        # The failing message was received again after its visibility timeout and moved to the
        # dead-letter queue by the redrive policy; nothing is left in the main queue.
        wait_for(lambda: q.count(q.dlq_url) >= 1, timeout=10, what="the dead-letter queue")
        body = q.sqs.receive_message(QueueUrl=q.dlq_url)["Messages"][0]["Body"]
        assert json.loads(body)["detail"]["imagesetId"] == ct
    finally:
        q.close()


def test_sigterm_mid_apply_finishes_the_image_set_and_saves(project, applied, moto_url, queue):
    ct = applied["ct-small"]
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "INTRUDER^EVE"}}})
    settle(project)
    # The healing write stays LOCKED for a second: SIGTERM arrives while it is in hand.
    held = project.emu.faults.add("UpdateImageSetMetadata", "lock", seconds=1.0,
                                  imageSetId=ct, times=1)
    process = watch(project, moto_url, queue, "--self-heal")
    wait_for(lambda: held.fired, timeout=30, what="the healing write")
    process.send_signal(signal.SIGTERM)
    code, events, err = finish(process)
    assert code == 0, err
    [done] = [e for e in of_type(events, "apply_complete") if e["image_set_id"] == ct]
    assert done["status"] == "applied"
    assert project.record("ct-small", ct)["version_after"] == done["version_after"] \
        == project.latest(ct)["versionId"]


NM_STUDY = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"
ROLE = "arn:aws:iam::123456789012:role/ImportRole"


def test_a_new_import_a_selector_covers_is_applied(tmp_path, moto_url, queue, monkeypatch):
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM / "CT_small.dcm")], update_delay=0.02,
                          events_endpoint=moto_url, s3_endpoint=moto_url) as emu:
        project = Project(tmp_path / "project", emu, example_specs=False)
        monkeypatch.chdir(project.root)
        project.write_spec("nm", {"Study": {"StudyDescription": "NM WHOLE BODY BONE"}},
                           selector={"DICOMStudyInstanceUID": NM_STUDY})
        # allowEmpty: the study is not there yet
        spec = project.specs_dir / "nm.yaml"
        spec.write_text(spec.read_text().replace("  selector:", "  allowEmpty: true\n  selector:"))
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        bucket = queue.name
        s3.create_bucket(Bucket=bucket)
        for name in ("JPEG2000.dcm", "JPEG-lossy.dcm"):
            s3.put_object(Bucket=bucket, Key=f"in/{name}",
                          Body=(EXAMPLES_DICOM / name).read_bytes())
        job = project.client.start_dicom_import_job(
            datastoreId=project.datastore_id, dataAccessRoleArn=ROLE,
            inputS3Uri=f"s3://{bucket}/in/", outputS3Uri=f"s3://{bucket}/out/")["jobId"]
        wait_for(lambda: project.client.get_dicom_import_job(
            datastoreId=project.datastore_id, jobId=job)["jobProperties"]["jobStatus"]
            == "COMPLETED", timeout=30, what="the import")
        emu.events.flush()
        nm = project.image_set_of(NM_STUDY)

        # Without --self-heal: planned and reported not-applied, exit 2, nothing written.
        code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "1"))
        assert code == 2, err
        [planned] = of_type(events, "planned_change")
        assert (planned["spec"], planned["image_set_id"]) == ("nm", nm)
        assert any(e["type"] == "change_summary" and e["operation"] == "drift"
                   and e["not-applied"] == 1 for e in events)
        assert project.record("nm", nm) is None

        # The same events again, with --self-heal: applied, recorded, converged.
        for record in emu.events.records():
            if record["event"]["detail-type"] in ("Image Set Created", "Import Job Completed"):
                queue.send(json.dumps(record["event"]))
        code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "1",
                                         "--self-heal"))
        assert code == 0, err
        [done] = [e for e in of_type(events, "apply_complete") if e["image_set_id"] == nm]
        assert done["status"] == "applied"
        assert project.metadata(nm)["Study"]["DICOM"]["StudyDescription"] == \
            "NM WHOLE BODY BONE"
        assert project.record("nm", nm)["version_after"] == project.latest(nm)["versionId"]


def test_two_watchers_on_one_state_lose_nothing(project, applied, moto_url, queue):
    ct, nm = applied["ct-small"], applied["nm-bone"]
    wanted = {i: project.metadata(i)["Study"]["DICOM"]["StudyDescription"] for i in (ct, nm)}
    for image_set_id in (ct, nm):
        project.write_oob(image_set_id,
                          updatable={"Study": {"DICOM": {"StudyDescription": "ELSEWHERE"}}})
    settle(project)
    first = watch(project, moto_url, queue, "--once", "--wait", "3", "--self-heal")
    second = watch(project, moto_url, queue, "--once", "--wait", "3", "--self-heal")
    results = [finish(first), finish(second)]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    healed = {e["image_set_id"] for _, events, _ in results
              for e in of_type(events, "apply_complete") if e["status"] == "applied"}
    assert healed == {ct, nm}
    for image_set_id, spec in ((ct, "ct-small"), (nm, "nm-bone")):
        assert project.metadata(image_set_id)["Study"]["DICOM"]["StudyDescription"] == \
            wanted[image_set_id]
        assert project.record(spec, image_set_id)["version_after"] == \
            project.latest(image_set_id)["versionId"]
    project.check_state_schema()
    assert project.run("drift").exit_code == 0


@pytest.mark.parametrize("heal", [False, True])
def test_resync_finds_drift_whose_events_were_lost(heal, project, applied, moto_url, queue):
    ct = applied["ct-small"]
    settle(project)
    queue.drain()                      # every event lost, the out-of-band edit's too
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "INTRUDER^EVE"}}})
    settle(project)
    queue.drain()
    code, events, err = finish(watch(project, moto_url, queue, "--once", "--wait", "3",
                                     "--resync-every", "1s", *(["--self-heal"] if heal else [])))
    assert code == (0 if heal else 2), err
    [found] = of_type(events, "drift_detected")
    assert (found["image_set_id"], found["status"]) == (ct, "drifted")
    healed = [e for e in of_type(events, "apply_complete") if e["status"] == "applied"]
    assert [e["image_set_id"] for e in healed] == ([ct] if heal else [])
    # The resync is drift itself: it saved its checkpoint in the state.
    assert project.state()["drift_checkpoints"]


def test_the_lambda_handler_reports_failed_records(project, applied, monkeypatch, capsys):
    from reconciler.cli import watch as watch_cli

    ct, nm = applied["ct-small"], applied["nm-bone"]
    version = project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "X^Y"}}})
    monkeypatch.setattr(watch_cli, "_LAMBDA_WATCHER", None)
    monkeypatch.setenv("RECONCILER_CONFIG", str(project.config_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", project.url)
    project.emu.faults.add("GetImageSet", "error", code="InternalServerException",
                           imageSetId=nm)
    records = [{"messageId": "m1", "body": envelope("Image Set Updated", project.datastore_id,
                                                    ct, int(version))},
               {"messageId": "m2", "body": envelope("Image Set Updated", project.datastore_id,
                                                    nm, 99)},
               {"messageId": "m3", "body": "not an event"}]
    answer = watch_cli.lambda_handler({"Records": records})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [found] = of_type(lines, "drift_detected")
    assert (found["image_set_id"], found["status"]) == (ct, "drifted")


def test_a_heal_blocked_by_the_lock_is_retried_from_the_queue(project, applied, moto_url):
    from reconciler.cli.base import make_backend
    from reconciler.spec.config import load_config

    q = Queue(moto_url, visibility=1, max_receives=10)
    try:
        ct = applied["ct-small"]
        settle(project)
        q.drain()
        project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "INTRUDER^EVE"}}})
        settle(project)
        backend = make_backend(load_config(str(project.config_path)))
        with backend.lock("another run"):          # e.g. a CI apply, holding the state lock
            process = watch(project, moto_url, q, "--once", "--wait", "4", "--self-heal",
                            "--lock-timeout", "0")
            stderr: list[str] = []
            reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
            reader.start()
            wait_for(lambda: any("left in the queue" in line for line in stderr), timeout=60,
                     what="a heal refused by the lock")
        out = process.stdout.read()
        process.wait(timeout=60)
        reader.join(timeout=10)
        code, err = process.returncode, "".join(stderr)
        events = [json.loads(line) for line in out.splitlines()]
        assert "left in the queue" in err           # it failed at least once, then:
        assert code == 0, err                       # handled on a later receive: no error
        [done] = [e for e in of_type(events, "apply_complete") if e["image_set_id"] == ct]
        assert done["status"] == "applied"
        assert project.record("ct-small", ct)["version_after"] == project.latest(ct)["versionId"]
    finally:
        q.close()


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_text_and_markdown_print_what_drift_and_apply_print(
        fmt, moto_url, queue, project, applied, monkeypatch):
    ct = applied["ct-small"]
    project.write_oob(ct, updatable={"Patient": {"DICOM": {"PatientName": "INTRUDER^EVE"}}})
    settle(project)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_url)
    result = project.run("watch", "--queue-url", queue.url, "--once", "--wait", "1",
                         "--self-heal", "--format", fmt, ci=True)
    assert result.exit_code == 0, result.stderr
    assert "Drift: 1 drifted, 0 missing" in result.stdout
    assert f"applied   ct-small: image set {ct}" in result.stdout
    assert "Apply complete: 1 applied." in result.stdout
    assert "INTRUDER" not in result.stdout + result.stderr      # CI: redacted
