"""The one write: every UpdateImageSetMetadata of the product goes through
:func:`send_update`, which also tells a stale version apart from a bad request."""

from __future__ import annotations

from typing import Any, Callable

from ..core import errors
from ..healthimaging import waits
from ..healthimaging.api import HealthImaging, UpdateResult
from ..spec.types import Spec

# Write failures that are retried: after a re-read, except throttling (refused, not accepted)
RETRIED_AFTER_REREAD = (errors.ConflictError, errors.InternalServerError, errors.EndpointError,
            errors.ThrottlingError)


def retried(exc: errors.ServiceError) -> bool:
    """Whether the SDK had already sent this request more than once when it failed: a 409
    after a retried write may be the write itself, landed behind an error or a timeout."""
    return bool(exc.retry_attempts)


def send_update(hi: HealthImaging, ds: str, image_set_id: str, version: str,
                **request: Any) -> UpdateResult:
    """UpdateImageSetMetadata on ``version`` (every write of the product goes through here).

    A stale ``latestVersionId``, or a write to an image set that is LOCKED, may be answered
    with 400 ValidationException instead of 409 (the API reference does not say which). So a
    400 is told apart by one ``GetImageSet``: when the latest version is no longer ``version``,
    or the image set is LOCKED or updating for study consistency, the 400 is raised as the
    :class:`~reconciler.core.errors.ConflictError` it stands for (keeping botocore's retry count,
    so a retried write that may have landed is still recognised); otherwise it is a real bad
    request and the service's error is raised as it came."""
    try:
        return hi.update_metadata(ds, image_set_id, version, **request)
    except errors.ServiceValidationError as exc:
        if exc.code != "ValidationException":
            raise        # refused by the SDK before anything was sent (ParamValidationError)
        try:
            live = hi.get_image_set(ds, image_set_id)
        except errors.ServiceError:
            raise exc from None
        if live.version_id == version and not waits.busy(live):
            raise
        conflict = errors.ConflictError(
            f"ValidationException on version {version}, taken as a conflict: the image set "
            f"is at version {live.version_id} ({live.state}"
            f"{'/' + live.workflow_status if live.workflow_status else ''})",
            status=exc.status, operation=exc.operation)
        conflict.retry_attempts = exc.retry_attempts
        conflict.subject = exc.subject
        raise conflict from exc


BeforeWrite = Callable[[Spec, str, str, str], None]
"""(spec, data store, image set, version) → None, called right before the first write of an
image set is sent on that version (again if a re-read moved the version before any write)."""
