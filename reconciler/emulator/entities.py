"""The emulator's records: data stores, image sets and their versions.

Plain dataclasses with a JSON form for :mod:`store`. The one invariant that everything else
relies on: **the latest version carries the image set's current state**. An update, a revert
or a copy into an existing set appends a version; a copy *source* or a delete changes the
latest version's state in place (they do not create versions, as the CLI examples show).

A version whose work is still in flight (state ``LOCKED``) has a ``pending`` completion: when
it falls due (time and, optionally, a number of GetImageSet polls) its fields are applied in
one step. Until then ``metadata`` holds what readers see (the previous content for an update)
and ``pending["metadata"]`` the content the version will have if it succeeds.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

ACCOUNT_ID = "123456789012"
ACTIVE, LOCKED, DELETED = "ACTIVE", "LOCKED", "DELETED"
# A LOCKED version with one of these statuses is a *new* version whose content is not final
# yet; other LOCKED states (a copy source, a delete in progress) lock an existing version.
IN_FLIGHT = frozenset({"UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY", "COPYING"})


def datastore_arn(region: str, datastore_id: str) -> str:
    return f"arn:aws:medical-imaging:{region}:{ACCOUNT_ID}:datastore/{datastore_id}"


def image_set_arn(region: str, datastore_id: str, image_set_id: str) -> str:
    return f"{datastore_arn(region, datastore_id)}/imageset/{image_set_id}"


@dataclass
class Version:
    version_id: int
    metadata: dict[str, Any]
    state: str
    status: str
    created_at: float
    updated_at: float
    message: str | None = None
    forced: bool = False
    deleted_at: float | None = None
    pending: dict[str, Any] | None = None   # see module docstring
    group: str | None = None                # includeStudyImageSets: complete together
    indexed: bool = False                   # in the search index from the start, whatever
                                            # search_index_lag (seeds: data imported long ago)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("metadata")
        if record["pending"]:
            record["pending"] = {k: v for k, v in record["pending"].items() if k != "metadata"}
        return record


@dataclass
class ImageSet:
    image_set_id: str
    datastore_id: str
    created_at: float
    is_primary: bool
    versions: list[Version] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    last_accessed_at: float | None = None

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def version(self, version_id: int) -> Version | None:
        if 1 <= version_id <= len(self.versions):
            return self.versions[version_id - 1]
        return None

    @property
    def deleted(self) -> bool:
        return self.latest.state == DELETED

    @staticmethod
    def in_flight(version: Version) -> bool:
        return version.state == LOCKED and version.status in IN_FLIGHT

    def properties(self, version: Version, region: str) -> dict[str, Any]:
        """GetImageSet's output for one version (camel-case keys of the model)."""
        return {
            "datastoreId": self.datastore_id,
            "imageSetId": self.image_set_id,
            "versionId": str(version.version_id),
            "imageSetState": version.state,
            "imageSetWorkflowStatus": version.status,
            "createdAt": version.created_at,
            "updatedAt": version.updated_at,
            "deletedAt": version.deleted_at,
            "message": version.message,
            "imageSetArn": image_set_arn(region, self.datastore_id, self.image_set_id),
            "overrides": {"forced": True} if version.forced else None,
            "isPrimary": self.is_primary,
            "lastAccessedAt": self.last_accessed_at,
            "storageTier": "FREQUENT_ACCESS",
        }

    def to_record(self) -> dict[str, Any]:
        return {"image_set_id": self.image_set_id, "datastore_id": self.datastore_id,
                "created_at": self.created_at, "is_primary": self.is_primary,
                "tags": self.tags, "last_accessed_at": self.last_accessed_at,
                "versions": [v.to_record() for v in self.versions]}

    @classmethod
    def from_record(cls, record: dict[str, Any], documents: dict[int, dict]) -> "ImageSet":
        versions = []
        for raw in record["versions"]:
            doc = documents[raw["version_id"]]
            pending = raw.get("pending")
            if pending is not None and doc.get("pending_metadata") is not None:
                pending = dict(pending, metadata=doc["pending_metadata"])
            versions.append(Version(**dict(raw, metadata=doc["metadata"], pending=pending)))
        return cls(record["image_set_id"], record["datastore_id"], record["created_at"],
                   record["is_primary"], versions, dict(record.get("tags", {})),
                   record.get("last_accessed_at"))


@dataclass
class Datastore:
    datastore_id: str
    name: str
    status: str
    created_at: float
    updated_at: float
    client_token: str | None = None
    kms_key_arn: str | None = None
    lambda_authorizer_arn: str | None = None
    lossless_storage_format: str = "HTJ2K"
    tags: dict[str, str] = field(default_factory=dict)
    pending: dict[str, Any] | None = None   # {"due_at": t, "status": final status}

    def summary(self, region: str) -> dict[str, Any]:
        return {"datastoreId": self.datastore_id, "datastoreName": self.name,
                "datastoreStatus": self.status,
                "datastoreArn": datastore_arn(region, self.datastore_id),
                "createdAt": self.created_at, "updatedAt": self.updated_at}

    def properties(self, region: str) -> dict[str, Any]:
        return dict(self.summary(region), kmsKeyArn=self.kms_key_arn,
                    lambdaAuthorizerArn=self.lambda_authorizer_arn,
                    losslessStorageFormat=self.lossless_storage_format)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Datastore":
        return cls(**record)


def with_ids(document: dict[str, Any], datastore_id: str, image_set_id: str) -> dict[str, Any]:
    """A deep copy of ``document`` carrying these ids, keys in the service's order."""
    doc = copy.deepcopy(document)
    out = {"SchemaVersion": "1.1", "DatastoreID": datastore_id, "ImageSetID": image_set_id}
    out.update({k: v for k, v in doc.items() if k not in out})
    return out
