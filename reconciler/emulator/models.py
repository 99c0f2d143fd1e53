"""The HealthImaging backend: data stores, image sets, the version store and its semantics.

moto's ``models.py`` shape: no HTTP in here. :class:`HealthImagingBackend` is assembled from
one mixin per concern, all sharing the core's lock, lookups and lifecycle:

* :mod:`core` — settings, lookups, asynchronous completion, the Python API for tests;
* :mod:`reads` — GetImageSet, GetImageSetMetadata, ListImageSetVersions, SearchImageSets;
* :mod:`writes` — UpdateImageSetMetadata (with :mod:`updates` and :mod:`rules`), CopyImageSet,
  DeleteImageSet;
* :mod:`imports` — DICOM import jobs from S3;
* :mod:`control` — data stores, tags, and the operations the emulator does not implement.

Every state change also becomes an EventBridge event (:mod:`events`).

Each public operation method is named after the API operation in snake_case, takes the parsed
input (the botocore model's member names) and a :class:`Call`, and returns the output members.
"""

from __future__ import annotations

from .control import ControlMixin
from .core import (
    DEFAULT_DATASTORE_NAME, BackendCore, Call, Settings, conflict, not_found, stable_id)
from .entities import ACCOUNT_ID
from .imports import ImportsMixin
from .reads import ReadsMixin
from .writes import WritesMixin

__all__ = ["HealthImagingBackend", "Call", "Settings", "DEFAULT_DATASTORE_NAME", "stable_id",
           "conflict", "not_found"]


class HealthImagingBackend(ReadsMixin, WritesMixin, ImportsMixin, ControlMixin,
                           BackendCore):
    """The complete backend."""

    account_id = ACCOUNT_ID
