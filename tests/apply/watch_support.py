"""Helpers of the watch tests: a queue with its dead-letter queue and EventBridge rule on moto's
server, messages in EventBridge's envelope, the watcher as a real process, call counters."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import boto3
from apply_support import Project


class Queue:
    """One test's SQS queue (with a dead-letter queue) and EventBridge rule on moto."""

    def __init__(self, url: str, visibility: int = 30, max_receives: int = 5):
        self.sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1")
        self.bus = boto3.client("events", endpoint_url=url, region_name="us-east-1")
        self.name = f"w{uuid.uuid4().hex[:12]}"
        self.dlq_url = self.sqs.create_queue(QueueName=self.name + "-dlq")["QueueUrl"]
        dlq_arn = self._arn(self.dlq_url)
        self.url = self.sqs.create_queue(QueueName=self.name, Attributes={
            "VisibilityTimeout": str(visibility),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(max_receives)})})["QueueUrl"]
        self.bus.put_rule(Name=self.name,
                          EventPattern=json.dumps({"source": ["aws.medical-imaging"]}))
        self.bus.put_targets(Rule=self.name, Targets=[{"Id": "q", "Arn": self._arn(self.url)}])

    def _arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]

    def close(self) -> None:
        self.bus.remove_targets(Rule=self.name, Ids=["q"])
        self.bus.delete_rule(Name=self.name)

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def count(self, url: str | None = None) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attrs["ApproximateNumberOfMessages"])
                + int(attrs["ApproximateNumberOfMessagesNotVisible"]))

    def drain(self) -> None:
        """Lose every message now in the queue (PurgeQueue allows one call a minute)."""
        while True:
            found = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=0).get("Messages", [])
            if not found:
                return
            for message in found:
                self.sqs.delete_message(QueueUrl=self.url,
                                        ReceiptHandle=message["ReceiptHandle"])


def envelope(detail_type: str, ds: str, image_set_id: str, version: int) -> str:
    """An Image Set event as EventBridge puts it in an SQS message."""
    return json.dumps({
        "version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type,
        "source": "aws.medical-imaging", "account": "123456789012",
        "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"imagingVersion": "1.0", "isPrimary": True,
                   "imageSetVersion": str(version), "datastoreId": ds, "imagesetId": image_set_id,
                   "imageSetState": "ACTIVE", "imageSetWorkflowStatus": "UPDATED"}})


def settle(project: Project) -> None:
    """Every event of what was done so far is in the queue."""
    project.emu.events.flush()


def watch(project: Project, moto_url: str, queue: Queue, *args: str) -> subprocess.Popen:
    os.environ["AWS_ENDPOINT_URL_SQS"] = moto_url      # inherited by project.popen's process
    try:
        return project.popen("watch", "--queue-url", queue.url, "--json-stream", *args)
    finally:
        del os.environ["AWS_ENDPOINT_URL_SQS"]


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, list[dict], str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, [json.loads(line) for line in out.splitlines()], err


def counters(project: Project, *image_set_ids: str) -> dict:
    """Fault rules that only count: GetImageSet and metadata reads of each image set."""
    return {(op, i): project.emu.faults.add(op, "latency", seconds=0, imageSetId=i)
            for op in ("GetImageSet", "GetImageSetMetadata") for i in image_set_ids}


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]
