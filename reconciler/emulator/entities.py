"""The emulator's records: data stores, image sets and their versions.

Plain dataclasses with a JSON form for :mod:`store`. The one invariant that everything else
relies on: **the latest version carries the image set's current state**. An update, a revert
or a copy into an existing set appends a version; a copy *source* or a delete changes the
latest version's state in place (they do not create versions, as the CLI examples show).

A version's metadata is kept as a :class:`Document`: the gzip'd JSON that GetImageSetMetadata
sends, ready to go, plus the few fields search and study lookups read (:class:`Summary`).
Reading ``version.metadata`` decodes a fresh dict (nobody can change a stored version in
place); assigning a dict encodes it once; assigning a Document shares it (a new version that
starts with the previous content costs nothing). At 100,000 image sets this keeps the emulator
at a few KiB per version instead of the tens of KiB a document's dicts take.

A version whose work is still in flight (state ``LOCKED``) has a ``pending`` completion: when
it falls due (time and, optionally, a number of GetImageSet polls) its fields are applied in
one step. Until then ``metadata`` holds what readers see (the previous content for an update)
and ``pending["metadata"]`` the content the version will have if it succeeds.
"""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

ACCOUNT_ID = "123456789012"
ACTIVE, LOCKED, DELETED = "ACTIVE", "LOCKED", "DELETED"
# A LOCKED version with one of these statuses is a *new* version whose content is not final
# yet; other LOCKED states (a copy source, a delete in progress) lock an existing version.
IN_FLIGHT = frozenset({"UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY", "COPYING"})


def datastore_arn(region: str, datastore_id: str) -> str:
    return f"arn:aws:medical-imaging:{region}:{ACCOUNT_ID}:datastore/{datastore_id}"


def image_set_arn(region: str, datastore_id: str, image_set_id: str) -> str:
    return f"{datastore_arn(region, datastore_id)}/imageset/{image_set_id}"


COMPRESS_LEVEL = 6


def encode(doc: dict[str, Any]) -> bytes:
    """A document as GetImageSetMetadata sends it: compact JSON, gzip'd, no timestamp."""
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), COMPRESS_LEVEL,
                         mtime=0)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


PATIENT_FIELDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_FIELDS = ("StudyInstanceUID", "StudyID", "StudyDescription", "AccessionNumber",
                "StudyDate", "StudyTime")
SERIES_FIELDS = ("Modality", "BodyPartExamined", "SeriesNumber")


class Summary(NamedTuple):
    """What search (filters, sort, DICOMTags) and study lookups read of a document, as the
    raw values the document holds (absent keys absent)."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series_uids: tuple[str, ...]       # Study.Series keys, in order
    first_series: dict[str, Any]       # SERIES_FIELDS of the first series' DICOM
    instances: int                     # instances over all series

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "Summary":
        patient = _dict(_dict(doc.get("Patient")).get("DICOM"))
        study_node = _dict(doc.get("Study"))
        study = _dict(study_node.get("DICOM"))
        series = _dict(study_node.get("Series"))
        first = _dict(_dict(next(iter(series.values()), {})).get("DICOM"))
        return cls({k: patient[k] for k in PATIENT_FIELDS if k in patient},
                   {k: study[k] for k in STUDY_FIELDS if k in study},
                   tuple(series),
                   {k: first[k] for k in SERIES_FIELDS if k in first},
                   sum(len(_dict(s).get("Instances") or {}) for s in series.values()))


class Document:
    """One version's metadata, immutable: ``blob`` (what GetImageSetMetadata sends) and its
    :class:`Summary`."""

    __slots__ = ("blob", "summary")

    def __init__(self, blob: bytes, summary: Summary):
        self.blob = blob
        self.summary = summary

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "Document":
        return cls(encode(doc), Summary.of(doc))

    def load(self) -> dict[str, Any]:
        return json.loads(gzip.decompress(self.blob))


class _Metadata:
    """``Version.metadata`` (see the module docstring): a dict to read, a dict or a
    :class:`Document` to assign; the Document itself is ``version.document``."""

    def __get__(self, obj: Any, owner: Any = None) -> dict[str, Any]:
        if obj is None:
            raise AttributeError("metadata")        # a required field, no default
        return obj.document.load()

    def __set__(self, obj: Any, value: "dict[str, Any] | Document") -> None:
        obj.document = value if isinstance(value, Document) else Document.of(value)


@dataclass
class Version:
    version_id: int
    metadata: dict[str, Any] = _Metadata()  # type: ignore[assignment]
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
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metadata"}
        if record["pending"]:
            record["pending"] = {k: v for k, v in record["pending"].items() if k != "metadata"}
        return copy.deepcopy(record)


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
