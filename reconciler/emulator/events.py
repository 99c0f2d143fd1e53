"""HealthImaging's EventBridge events: built, logged, and published best-effort with PutEvents.

The developer guide's event-notifications page and the EventBridge events reference for
``aws.medical-imaging`` list 19 event types (5 data store, 4 import job, 10 image set), each
with a ``detail-type`` and a small ``detail`` of ids and states — never metadata values. The
emulator builds exactly those envelopes (``version`` "0", a UUID4 ``id``, ``source``
``aws.medical-imaging``, the fake account, ``--region``, the resource ARN in ``resources``).

Every event goes into an in-memory log (``GET /_emulator/events``), with its delivery state.
With an events endpoint (``--events-endpoint URL``) a single background thread sends them in
order, up to 10 per ``PutEvents`` call, to the default event bus. Delivery is best effort, as
AWS documents: a failed call or a failed entry is logged (event ids and error codes only) and
never reaches the operation that caused the event. The backend only ever appends to a queue
while it holds its lock; the network call happens outside it.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import queue
import threading
import time
import uuid
from typing import Any, Callable

from .entities import ACCOUNT_ID, datastore_arn, image_set_arn

log = logging.getLogger("reconciler.emulator.events")

SOURCE = "aws.medical-imaging"
IMAGING_VERSION = "1.0"

DATASTORE_EVENTS = {
    "CREATING": "Data Store Creating",
    "CREATE_FAILED": "Data Store Creation Failed",
    "ACTIVE": "Data Store Created",
    "DELETING": "Data Store Deleting",
    "DELETED": "Data Store Deleted",
}
JOB_EVENTS = {
    "SUBMITTED": "Import Job Submitted",
    "IN_PROGRESS": "Import Job In Progress",
    "COMPLETED": "Import Job Completed",
    "FAILED": "Import Job Failed",
}
IMAGE_SET_EVENTS = {
    "CREATED": "Image Set Created",
    "COPYING": "Image Set Copying",
    "COPYING_WITH_READ_ONLY_ACCESS": "Image Set Copying With Read Only Access",
    "COPIED": "Image Set Copied",
    "COPY_FAILED": "Image Set Copy Failed",
    "UPDATING": "Image Set Updating",
    "UPDATED": "Image Set Updated",
    "UPDATE_FAILED": "Image Set Update Failed",
    "DELETING": "Image Set Deleting",
    "DELETED": "Image Set Deleted",
}
ALL_DETAIL_TYPES = (tuple(DATASTORE_EVENTS.values()) + tuple(JOB_EVENTS.values())
                    + tuple(IMAGE_SET_EVENTS.values()))


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventLog:
    """Builds events, keeps the last ``limit`` of them and hands them to a publisher."""

    def __init__(self, region: str = "us-east-1", publisher: "Publisher | None" = None,
                 limit: int = 1000):
        self.region = region
        self.publisher = publisher
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ builders
    def datastore(self, datastore_id: str, name: str, status: str, at: float) -> None:
        self._emit(DATASTORE_EVENTS[status], datastore_arn(self.region, datastore_id), {
            "imagingVersion": IMAGING_VERSION, "datastoreId": datastore_id,
            "datastoreName": name, "datastoreStatus": status}, at)

    def job(self, job: dict[str, Any], at: float) -> None:
        self._emit(JOB_EVENTS[job["jobStatus"]], datastore_arn(self.region, job["datastoreId"]), {
            "imagingVersion": IMAGING_VERSION, "datastoreId": job["datastoreId"],
            "jobId": job["jobId"], "jobName": job["jobName"], "jobStatus": job["jobStatus"],
            "inputS3Uri": job["inputS3Uri"], "outputS3Uri": job["outputS3Uri"]}, at)

    def image_set(self, datastore_id: str, image_set_id: str, version_id: int,
                  is_primary: bool, state: str, status: str, at: float,
                  detail_type: str | None = None, **extra: Any) -> None:
        """One image-set event; ``detail_type`` defaults to the one of ``status``.

        ``imagesetId`` (lower-case s) is the key the developer guide's examples and field
        table use, unlike ``imageSetId`` everywhere in the API.
        """
        detail_type = detail_type or IMAGE_SET_EVENTS[status]
        detail = {"imagingVersion": IMAGING_VERSION, "isPrimary": is_primary,
                  "imageSetVersion": str(version_id), "datastoreId": datastore_id,
                  "imagesetId": image_set_id, "imageSetState": state,
                  "imageSetWorkflowStatus": status}
        detail.update(extra)
        self._emit(detail_type, image_set_arn(self.region, datastore_id, image_set_id),
                   detail, at)

    def _emit(self, detail_type: str, resource: str, detail: dict[str, Any], at: float) -> None:
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type,
                 "source": SOURCE, "account": ACCOUNT_ID, "time": iso(at),
                 "region": self.region, "resources": [resource], "detail": detail}
        record = {"event": event,
                  "delivery": "pending" if self.publisher else "not_published"}
        with self._lock:
            self._records.append(record)
        if self.publisher:
            self.publisher.submit(record)

    # --------------------------------------------------------------------- reads
    def records(self, detail_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = [dict(r) for r in self._records]
        if detail_type:
            found = [r for r in found if r["event"]["detail-type"] == detail_type]
        return found

    def events(self, detail_type: str | None = None) -> list[dict[str, Any]]:
        return [r["event"] for r in self.records(detail_type)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every published event has been handed to PutEvents (or failed)."""
        return self.publisher.flush(timeout) if self.publisher else True


class Publisher:
    """One background thread that sends queued events to EventBridge with PutEvents."""

    BATCH = 10    # PutEvents takes at most 10 entries

    def __init__(self, endpoint_url: str, region: str,
                 client_factory: Callable[[], Any] | None = None):
        self.endpoint_url = endpoint_url
        self.region = region
        self._factory = client_factory or self._default_client
        self._client: Any = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="emulator-events", daemon=True)
        self._thread.start()

    def _default_client(self) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        kwargs: dict[str, Any] = {}
        if session.get_credentials() is None:      # any credentials do for moto / LocalStack
            kwargs = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return session.client("events", endpoint_url=self.endpoint_url,
                              region_name=self.region,
                              config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                            connect_timeout=2, read_timeout=5), **kwargs)

    def submit(self, record: dict[str, Any]) -> None:
        self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            batch = [first]
            while len(batch) < self.BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)    # stop after this batch
                    self._queue.task_done()
                    break
                batch.append(more)
            try:
                self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        entries = [{"Source": r["event"]["source"], "DetailType": r["event"]["detail-type"],
                    "Detail": json.dumps(r["event"]["detail"]),
                    "Resources": r["event"]["resources"], "EventBusName": "default",
                    "Time": dt.datetime.strptime(r["event"]["time"], "%Y-%m-%dT%H:%M:%SZ")
                    .replace(tzinfo=dt.timezone.utc)}
                   for r in batch]
        try:
            if self._client is None:
                self._client = self._factory()
            answer = self._client.put_events(Entries=entries)
        except Exception as exc:  # noqa: BLE001 - best effort: log, never raise
            log.warning("PutEvents failed for %d event(s) (%s); events are best effort",
                        len(batch), type(exc).__name__)
            for record in batch:
                record["delivery"] = "failed"
                record["error"] = type(exc).__name__
            return
        for record, entry in zip(batch, answer.get("Entries", [])):
            if entry.get("EventId"):
                record["delivery"] = "sent"
                record["eventBridgeId"] = entry["EventId"]
            else:
                record["delivery"] = "failed"
                record["error"] = entry.get("ErrorCode", "unknown")
                log.warning("PutEvents refused event %s (%s)", record["event"]["id"],
                            record["error"])
