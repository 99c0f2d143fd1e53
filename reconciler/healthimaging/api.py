"""The small HealthImaging protocol the engine depends on.

The planner, applier and drift checker talk to HealthImaging only through :class:`HealthImaging`
and the plain records below, never through boto3. ``reconciler.healthimaging.aws`` implements it with boto3;
tests use the same implementation against the emulator over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator, Protocol

LOCKED = "LOCKED"
ACTIVE = "ACTIVE"
DELETED = "DELETED"
UPDATED = "UPDATED"
UPDATE_FAILED = "UPDATE_FAILED"
# the other primary image sets of a study while an includeStudyImageSets update is in flight
UPDATING_FOR_STUDY_CONSISTENCY = "UPDATING_FOR_STUDY_CONSISTENCY"


@dataclass(frozen=True, slots=True)
class ImageSet:
    """GetImageSet: one version's properties (the latest when no version was asked); also an
    item of ListImageSetVersions."""

    datastore_id: str
    image_set_id: str
    version_id: str
    state: str
    workflow_status: str | None = None
    message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    forced: bool = False
    is_primary: bool | None = None

    @property
    def locked(self) -> bool:
        return self.state == LOCKED


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """UpdateImageSetMetadata's response: the *new* version, usually LOCKED/UPDATING."""

    datastore_id: str
    image_set_id: str
    latest_version_id: str
    state: str
    workflow_status: str | None = None
    message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImageSetSummary:
    """One item of SearchImageSets. ``version`` is a string here, as everywhere else in the
    engine, although the service sends it as an integer."""

    image_set_id: str
    version: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    is_primary: bool | None = None
    dicom_tags: dict[str, Any] = field(default_factory=dict)


class HealthImaging(Protocol):
    """What the engine needs from HealthImaging. Every method raises
    :class:`reconciler.core.errors.ServiceError` subclasses, never botocore exceptions."""

    def get_image_set(self, datastore_id: str, image_set_id: str,
                      version_id: str | None = None) -> ImageSet: ...

    def get_metadata(self, datastore_id: str, image_set_id: str,
                     version_id: str | None = None) -> dict[str, Any]:
        """The metadata document of one version, gunzipped and parsed."""

    def update_metadata(self, datastore_id: str, image_set_id: str, latest_version_id: str, *,
                        updatable: str | None = None, removable: str | None = None,
                        revert_to_version_id: str | None = None, force: bool = False,
                        include_study_image_sets: bool = False) -> UpdateResult:
        """``updatable`` / ``removable`` are the exact JSON texts to send (the plan stores them);
        ``revert_to_version_id`` excludes both."""

    def list_versions(self, datastore_id: str, image_set_id: str) -> list[ImageSet]:
        """Every version, all pages, sorted by version number ascending."""

    def search_image_sets(self, datastore_id: str, filters: list[dict[str, Any]] | None = None,
                          sort: dict[str, str] | None = None) -> Iterator[ImageSetSummary]:
        """Every match, following ``nextToken``. ``filters``/``sort`` are the API's shapes."""
