"""The second AWS seam: the SQS queue ``reconciler watch`` reads HealthImaging's EventBridge
events from (an EventBridge rule with an SQS target puts each event's envelope in a message).

Reached like every AWS service: the standard credential chain, ``--region`` / ``--profile``,
and boto3's own endpoint variables (``AWS_ENDPOINT_URL_SQS``, then ``AWS_ENDPOINT_URL``).
Errors become the project's domain errors through :func:`reconciler.healthimaging.aws.map_error`,
so a watcher fails on SQS exactly as on HealthImaging. A message body is never logged: it is
an event of ids and states, but a foreign message in the queue could hold anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from ..core import errors
from .aws import ClientSettings, map_error

log = logging.getLogger(__name__)

MAX_BATCH = 10          # ReceiveMessage returns at most 10 messages
MAX_WAIT = 20           # seconds: SQS's longest long poll


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt: str
    body: str
    receive_count: int      # ApproximateReceiveCount: 1 on the first delivery


def make_sqs_client(settings: ClientSettings = ClientSettings()):
    """An ``sqs`` client from the standard chain (boto3 resolves ``AWS_ENDPOINT_URL_SQS``)."""
    try:
        session = boto3.session.Session(profile_name=settings.profile,
                                        region_name=settings.region)
        return session.client("sqs", config=Config(
            connect_timeout=settings.connect_timeout, read_timeout=MAX_WAIT + 10,
            retries={"mode": "standard", "total_max_attempts": 5}))
    except botocore.exceptions.ProfileNotFound as exc:
        raise errors.ConfigError(str(exc)) from exc
    except botocore.exceptions.NoRegionError as exc:
        raise errors.ConfigError("no AWS region for SQS: pass --region or set AWS_REGION "
                                 "(or region in reconciler.yaml)") from exc


class SqsQueue:
    """One queue: receive a batch, delete a message once its work is saved."""

    def __init__(self, queue_url: str, client=None, settings: ClientSettings = ClientSettings()):
        self.queue_url = queue_url
        self.client = client or make_sqs_client(settings)
        self.calls = 0

    def _call(self, operation: str, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        try:
            return getattr(self.client, method)(QueueUrl=self.queue_url, **params)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a domain error
            raise map_error(exc, f"SQS {operation}") from None

    def receive(self, wait_seconds: float, max_messages: int = MAX_BATCH) -> list[Message]:
        answer = self._call("ReceiveMessage", "receive_message",
                            MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                            WaitTimeSeconds=int(max(0, min(MAX_WAIT, wait_seconds))),
                            AttributeNames=["ApproximateReceiveCount"])
        found = []
        for raw in answer.get("Messages", []):
            count = raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")
            found.append(Message(raw["MessageId"], raw["ReceiptHandle"], raw.get("Body", ""),
                                 int(count) if str(count).isdigit() else 1))
        return found

    def delete(self, message: Message) -> None:
        self._call("DeleteMessage", "delete_message", ReceiptHandle=message.receipt)
