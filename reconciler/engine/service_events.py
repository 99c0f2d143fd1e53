"""HealthImaging's EventBridge events as ``reconciler watch`` reads them from SQS.

An EventBridge rule with an SQS target puts each event's envelope, as JSON, in the message
body: ``source`` ``aws.medical-imaging``, ``detail-type`` one of the 19 types of the developer
guide's event-notifications page, and a ``detail`` of ids and states (never metadata values;
the image set's id is ``imagesetId``, lower-case s, as the guide writes it). Anything else in
the queue is *foreign*: :func:`parse` returns None for it, and the watcher logs its message id
(never its body) and deletes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SOURCE = "aws.medical-imaging"

UPDATED, COPIED, DELETED, CREATED = ("Image Set Updated", "Image Set Copied",
                                     "Image Set Deleted", "Image Set Created")
IMPORT_COMPLETED = "Import Job Completed"
# The events that say an image set's metadata may differ from what it was: a managed one is
# checked, a new one (created or copied into) is matched against the selector specs. A revert
# (revertToVersionId) is an update: it arrives as Image Set Updated.
CHANGED = (UPDATED, COPIED, DELETED, CREATED)
NEW = (CREATED, COPIED)
KNOWN = (
    "Data Store Creating", "Data Store Created", "Data Store Creation Failed",
    "Data Store Deleting", "Data Store Deleted",
    "Import Job Submitted", "Import Job In Progress", IMPORT_COMPLETED, "Import Job Failed",
    CREATED, "Image Set Copying", "Image Set Copying With Read Only Access", COPIED,
    "Image Set Copy Failed", "Image Set Updating", UPDATED, "Image Set Update Failed",
    "Image Set Deleting", DELETED)


@dataclass(frozen=True)
class ServiceEvent:
    """The ids of one HealthImaging event; ``version`` is ``imageSetVersion`` as a number."""

    event_id: str
    detail_type: str
    datastore_id: str | None
    image_set_id: str | None = None
    version: int | None = None
    job_id: str | None = None

    def describe(self) -> str:
        """Ids only, for logs and messages."""
        what = (f"image set {self.image_set_id}" if self.image_set_id
                else f"import job {self.job_id}" if self.job_id else "")
        version = f" version {self.version}" if self.version is not None else ""
        return f"{self.detail_type} ({what}{version})" if what else self.detail_type


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse(body: str) -> ServiceEvent | None:
    """The event in a message body, or None when it is not a HealthImaging event this product
    knows (unparseable JSON, another source, an unknown detail-type, missing ids)."""
    try:
        envelope = json.loads(body)
    except (ValueError, TypeError):
        return None
    if not isinstance(envelope, dict) or envelope.get("source") != SOURCE:
        return None
    detail_type, detail = envelope.get("detail-type"), envelope.get("detail")
    if detail_type not in KNOWN or not isinstance(detail, dict):
        return None
    version_text = detail.get("imageSetVersion")
    version = None
    if isinstance(version_text, (str, int)) and str(version_text).isdigit():
        version = int(version_text)
    image_set_id = _text(detail.get("imagesetId")) or _text(detail.get("imageSetId"))
    found = ServiceEvent(event_id=_text(envelope.get("id")) or "", detail_type=detail_type,
                         datastore_id=_text(detail.get("datastoreId")),
                         image_set_id=image_set_id, version=version,
                         job_id=_text(detail.get("jobId")))
    if detail_type in CHANGED and (found.datastore_id is None or image_set_id is None):
        return None
    if detail_type == IMPORT_COMPLETED and found.datastore_id is None:
        return None
    return found
