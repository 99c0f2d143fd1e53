"""The only boto3 seam: client construction, pacing, gzip, and error mapping.

Everything the engine knows about HealthImaging goes through :class:`BotoHealthImaging`, which
implements :class:`reconciler.healthimaging.api.HealthImaging`. Two traps live here so nobody else has to
know them:

* image-set operations carry the ``runtime-`` host prefix in the service model; with a custom
  endpoint (the emulator, a proxy) boto3 would send them to ``runtime-127.0.0.1``, so host
  prefix injection is switched off exactly when the endpoint is not AWS's own;
* GetImageSetMetadata returns gzip bytes that botocore does not decompress.

Retries of throttling and 5xx answers are botocore's ``standard`` retry mode, configured here,
not hand-written. ConflictException is never retried blindly: it goes up to the engine, which
re-reads and re-diffs.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sys
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

from ..core import errors
from .api import ImageSet, ImageSetSummary, UpdateResult
from .pacing import Pacer

log = logging.getLogger(__name__)

SERVICE = "medical-imaging"
DEFAULT_MAX_ATTEMPTS = 5
AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws", ".c2s.ic.gov", ".sc2s.sgov.gov")
# Region used to sign requests to a custom endpoint when none is configured: the emulator
# accepts any region, and failing with NoRegionError against a local server helps nobody.
CUSTOM_ENDPOINT_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class ClientSettings:
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def is_aws_endpoint(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith(AWS_HOST_SUFFIXES)


def _retry_config() -> dict[str, Any] | None:
    # Respect the standard AWS settings when the user gave them; otherwise standard mode.
    if os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS"):
        return None
    return {"mode": "standard", "total_max_attempts": DEFAULT_MAX_ATTEMPTS}


def make_client(settings: ClientSettings = ClientSettings()):
    """A ``medical-imaging`` client from the standard chain.

    Endpoint precedence is boto3's own: ``--endpoint-url``, then
    ``AWS_ENDPOINT_URL_MEDICAL_IMAGING``, ``AWS_ENDPOINT_URL``, then the shared config file.
    The endpoint boto3 resolved decides whether host-prefix injection stays on.
    """
    try:
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise errors.ConfigError(str(exc)) from exc

    def build(region: str | None, inject_host_prefix: bool):
        kwargs: dict[str, Any] = dict(connect_timeout=settings.connect_timeout,
                                      read_timeout=settings.read_timeout)
        retries = _retry_config()
        if retries:
            kwargs["retries"] = retries
        if not inject_host_prefix:
            kwargs["inject_host_prefix"] = False
        return session.client(SERVICE, region_name=region, endpoint_url=settings.endpoint_url,
                              config=Config(**kwargs))

    region = settings.region or session.region_name
    explicit = settings.endpoint_url
    if not explicit and os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        explicit = (os.environ.get("AWS_ENDPOINT_URL_MEDICAL_IMAGING")
                    or os.environ.get("AWS_ENDPOINT_URL"))
    if explicit and not is_aws_endpoint(explicit):
        return build(region or CUSTOM_ENDPOINT_DEFAULT_REGION, inject_host_prefix=False)
    try:
        client = build(region, inject_host_prefix=True)
    except botocore.exceptions.NoRegionError as exc:
        raise errors.ConfigError(
            "no AWS region: pass --region, set AWS_REGION, or set region in reconciler.yaml"
        ) from exc
    if is_aws_endpoint(client.meta.endpoint_url):
        return client
    # An endpoint from the shared config file that is not AWS's own.
    return build(region or CUSTOM_ENDPOINT_DEFAULT_REGION, inject_host_prefix=False)


def map_error(exc: Exception, operation: str) -> errors.ServiceError:
    """The one mapping from botocore exceptions to the project's error classes."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or "Unknown"
        message = err.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        cls = errors.SERVICE_ERRORS.get(code)
        if cls is None:
            cls = errors.InternalServerError if (status or 0) >= 500 else errors.ServiceError
        error = cls(message, code=code, status=status, operation=operation)
        # How many times botocore already retried: a 409 after a retried 500 or timeout is the
        # retry hazard (the first attempt may have committed).
        error.retry_attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        return error
    if isinstance(exc, (botocore.exceptions.NoCredentialsError,
                        botocore.exceptions.PartialCredentialsError)):
        return errors.CredentialsError(
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            operation=operation)
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.ReadTimeoutError,
                        botocore.exceptions.ConnectTimeoutError)):
        return errors.EndpointError(str(exc), operation=operation)
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return errors.ServiceValidationError(str(exc), code="ParamValidationError",
                                             operation=operation)
    return errors.ServiceError(f"{type(exc).__name__}: {exc}", operation=operation)


def _require(response: dict[str, Any], keys: tuple[str, ...], operation: str,
             subject: str) -> None:
    """botocore parses a 200 whose body is not JSON into ``{}``: a response missing what the
    model says it always has is malformed, and said so, not a KeyError or an empty result."""
    missing = [k for k in keys if k not in response]
    if missing:
        raise errors.about(errors.MalformedResponseError(
            f"the response lacks {', '.join(missing)} (malformed or truncated body)",
            operation=operation), subject)


def _when(value: Any) -> Any:
    """A timestamp in UTC. botocore gives every datetime a ``tzlocal()`` object of its own
    (~0.5 KB each, two per listed image set: most of what a 100,000-row plan's listings held);
    ``timezone.utc`` is one shared object, and the instant is the same. A naive time stays
    as it is (``reading.aware`` takes it as UTC)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    return value


def _version_str(value: Any) -> str:
    return sys.intern(str(int(value)) if isinstance(value, (int, float)) else str(value))


def _shared(value: Any) -> Any:
    """A string every answer repeats (a data store id, a state, a workflow status), as one
    object: apply keeps an answer per image set, 100,000 of them at fleet scale."""
    return sys.intern(value) if type(value) is str else value


class BotoHealthImaging:
    """:class:`reconciler.healthimaging.api.HealthImaging` over boto3, paced per operation."""

    def __init__(self, client=None, *, pacer: Pacer | None = None,
                 settings: ClientSettings = ClientSettings()):
        self.client = client if client is not None else make_client(settings)
        self.pacer = pacer or Pacer()
        self.calls: dict[str, int] = {}
        # A token per HTTP attempt, taken as late as possible: botocore's own retries are
        # paced too, and signing / serialising / thread scheduling happen before the token,
        # so they cannot squeeze two requests closer together than the pacer spaced them.
        self.client.meta.events.register(f"before-send.{SERVICE}", self._before_send)
        # botocore retries a 429 by itself; the pacer must still hear of it to slow down.
        # Registered first, because the retry handler's answer ends the event's dispatch.
        self.client.meta.events.register_first(f"needs-retry.{SERVICE}", self._saw_response)

    def _before_send(self, event_name: str = "", **_: Any) -> None:
        self.pacer.acquire(event_name.rsplit(".", 1)[-1])
        return None   # anything else would replace the HTTP response

    def _saw_response(self, response=None, operation=None, **_: Any) -> None:
        if response is not None and operation is not None:
            code = (response[1] or {}).get("Error", {}).get("Code")
            if code == "ThrottlingException":
                self.pacer.throttled(operation.name)
        return None

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, operation: str, method: str, **params: Any) -> dict[str, Any]:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        try:
            return getattr(self.client, method)(**params)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            error = map_error(exc, operation)
            # Ids and codes only: never parameters, which may hold metadata.
            log.debug("%s failed: %s (%s)", operation, error.code, error.status)
            raise error from exc

    # -- the protocol -------------------------------------------------------------------------
    def get_image_set(self, datastore_id: str, image_set_id: str,
                      version_id: str | None = None) -> ImageSet:
        params: dict[str, Any] = dict(datastoreId=datastore_id, imageSetId=image_set_id)
        if version_id is not None:
            params["versionId"] = version_id
        r = self._call("GetImageSet", "get_image_set", **params)
        _require(r, ("datastoreId", "imageSetId", "versionId", "imageSetState"), "GetImageSet",
                 f"image set {image_set_id}")
        return ImageSet(
            datastore_id=_shared(r["datastoreId"]), image_set_id=r["imageSetId"],
            version_id=_version_str(r["versionId"]), state=_shared(r["imageSetState"]),
            workflow_status=_shared(r.get("imageSetWorkflowStatus")), message=r.get("message"),
            created_at=_when(r.get("createdAt")), updated_at=_when(r.get("updatedAt")),
            forced=bool((r.get("overrides") or {}).get("forced")), is_primary=r.get("isPrimary"))

    def get_metadata(self, datastore_id: str, image_set_id: str,
                     version_id: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = dict(datastoreId=datastore_id, imageSetId=image_set_id)
        if version_id is not None:
            params["versionId"] = version_id
        r = self._call("GetImageSetMetadata", "get_image_set_metadata", **params)
        body = r["imageSetMetadataBlob"]
        try:
            raw = body.read()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise map_error(exc, "GetImageSetMetadata") from exc
        finally:
            body.close()
        return decode_metadata(raw, image_set_id)

    def update_metadata(self, datastore_id: str, image_set_id: str, latest_version_id: str, *,
                        updatable: str | None = None, removable: str | None = None,
                        revert_to_version_id: str | None = None, force: bool = False,
                        include_study_image_sets: bool = False) -> UpdateResult:
        if revert_to_version_id is not None:
            if updatable is not None or removable is not None:
                raise errors.UsageError("a revert cannot carry DICOM updates")
            updates: dict[str, Any] = {"revertToVersionId": revert_to_version_id}
        else:
            dicom: dict[str, Any] = {}
            if updatable is not None:
                dicom["updatableAttributes"] = updatable.encode("utf-8")
            if removable is not None:
                dicom["removableAttributes"] = removable.encode("utf-8")
            updates = {"DICOMUpdates": dicom}
        params: dict[str, Any] = dict(datastoreId=datastore_id, imageSetId=image_set_id,
                                      latestVersionId=latest_version_id,
                                      updateImageSetMetadataUpdates=updates)
        # Sent only when asked: the flags change what the service allows.
        if force:
            params["force"] = True
        if include_study_image_sets:
            params["includeStudyImageSets"] = True
        r = self._call("UpdateImageSetMetadata", "update_image_set_metadata", **params)
        return UpdateResult(
            datastore_id=_shared(r["datastoreId"]), image_set_id=r["imageSetId"],
            latest_version_id=_version_str(r["latestVersionId"]),
            state=_shared(r["imageSetState"]),
            workflow_status=_shared(r.get("imageSetWorkflowStatus")), message=r.get("message"),
            created_at=_when(r.get("createdAt")), updated_at=_when(r.get("updatedAt")))

    def list_versions(self, datastore_id: str, image_set_id: str) -> list[ImageSet]:
        versions: list[ImageSet] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = dict(datastoreId=datastore_id, imageSetId=image_set_id,
                                          maxResults=50)
            if token:
                params["nextToken"] = token
            r = self._call("ListImageSetVersions", "list_image_set_versions", **params)
            for item in r.get("imageSetPropertiesList", []):
                versions.append(ImageSet(
                    datastore_id=datastore_id, image_set_id=item["imageSetId"],
                    version_id=_version_str(item["versionId"]), state=item["imageSetState"], workflow_status=item.get("ImageSetWorkflowStatus"),
                    message=item.get("message"), created_at=_when(item.get("createdAt")),
                    updated_at=_when(item.get("updatedAt")),
                    forced=bool((item.get("overrides") or {}).get("forced")),
                    is_primary=item.get("isPrimary")))
            token = r.get("nextToken")
            if not token:
                break
        versions.sort(key=lambda v: int(v.version_id))
        return versions

    def search_image_sets(self, datastore_id: str, filters: list[dict[str, Any]] | None = None,
                          sort: dict[str, str] | None = None) -> Iterator[ImageSetSummary]:
        criteria: dict[str, Any] = {}
        if filters:
            criteria["filters"] = filters
        if sort:
            criteria["sort"] = sort
        token: str | None = None
        while True:
            params: dict[str, Any] = dict(datastoreId=datastore_id, maxResults=50,
                                          searchCriteria=criteria)
            if token:
                params["nextToken"] = token
            r = self._call("SearchImageSets", "search_image_sets", **params)
            # An unreadable page must not pass for an empty result ("matched nothing").
            _require(r, ("imageSetsMetadataSummaries",), "SearchImageSets",
                     f"data store {datastore_id}")
            for item in r["imageSetsMetadataSummaries"]:
                yield ImageSetSummary(
                    image_set_id=item["imageSetId"], version=_version_str(item.get("version", 0)),
                    created_at=_when(item.get("createdAt")),
                    updated_at=_when(item.get("updatedAt")), is_primary=item.get("isPrimary"),
                    dicom_tags=dict(item.get("DICOMTags") or {}))
            token = r.get("nextToken")
            if not token:
                return

    # -- not in the engine's protocol, used by the demo and `import` ---------------------------
    def list_datastores(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"maxResults": 50}
            if token:
                params["nextToken"] = token
            r = self._call("ListDatastores", "list_datastores", **params)
            out.extend(r.get("datastoreSummaries", []))
            token = r.get("nextToken")
            if not token:
                return out


def decode_metadata(raw: bytes, image_set_id: str) -> dict[str, Any]:
    """Gunzip and parse a metadata blob; anything else is a clear, named error."""
    try:
        text = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise errors.MalformedResponseError(
            f"image set {image_set_id}: metadata is not valid gzip ({type(exc).__name__})",
            operation="GetImageSetMetadata") from exc
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.MalformedResponseError(
            f"image set {image_set_id}: metadata is not valid JSON ({type(exc).__name__})",
            operation="GetImageSetMetadata") from exc
    if not isinstance(doc, dict):
        raise errors.MalformedResponseError(
            f"image set {image_set_id}: metadata is not a JSON object",
            operation="GetImageSetMetadata")
    return doc
