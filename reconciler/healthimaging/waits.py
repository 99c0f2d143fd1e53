"""Waiting for an asynchronous write to finish: the one loop plan, apply and rollback share.

HealthImaging has no waiters (its botocore model's waiters file is empty), so we poll
GetImageSet. An image set is busy while it is ``LOCKED`` and while a study-wide update of
another image set is in flight on it (``UPDATING_FOR_STUDY_CONSISTENCY``). While waiting for a
write we made, a poll that fails transiently (throttled, a 500, a lost connection, a 409 from a
read during an update) does not end the wait: the write was accepted, and only the bound may
end it. A reader (plan) waits through 409s only: its other errors are its own to report.
"""

from __future__ import annotations

import time
from typing import Callable

from ..core import errors
from .api import UPDATING_FOR_STUDY_CONSISTENCY, HealthImaging, ImageSet

TRANSIENT = (errors.ThrottlingError, errors.InternalServerError, errors.EndpointError,
             errors.ConflictError)
WHILE_READING = (errors.ConflictError,)
MAX_INTERVAL = 2.0


def busy(image_set: ImageSet) -> bool:
    return image_set.locked or image_set.workflow_status == UPDATING_FOR_STUDY_CONSISTENCY


def settle(hi: HealthImaging, datastore_id: str, image_set_id: str,
           version_id: str | None = None, *, deadline: float, interval: float,
           sleep: Callable[[float], None] = time.sleep,
           transient: tuple[type[Exception], ...] = TRANSIENT) -> ImageSet | None:
    """Poll ``version_id`` (the latest when None) until it is no longer busy; returns it, or
    None when ``deadline`` (``time.monotonic()``) passed first. The interval grows 1.5-fold up
    to :data:`MAX_INTERVAL`."""
    while True:
        try:
            image_set = hi.get_image_set(datastore_id, image_set_id, version_id)
            if not busy(image_set):
                return image_set
        except transient:
            pass
        if time.monotonic() >= deadline:
            return None
        sleep(interval)
        interval = min(interval * 1.5, MAX_INTERVAL)
