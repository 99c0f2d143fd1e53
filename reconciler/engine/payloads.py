"""Changes → the exact UpdateImageSetMetadata requests to send.

One request per image set carries both documents: ``updatableAttributes`` (new values) and
``removableAttributes`` (the attributes to remove, each with its **current** value from the
pinned version, as HealthImaging requires; ``{}`` for a whole series or instance). Each
document is SchemaVersion-1.1 JSON mirroring the metadata hierarchy, restricted to what
changes. ``SchemaVersion`` is written in the form (the string ``"1.1"`` or the number ``1.1``)
of the metadata document the diff was made against (:func:`schema_version_of`): the service's
own documents carry the form it uses, and a service accepting only one form refuses the other. A document may hold at most :data:`BLOB_LIMIT` bytes; only when the changes do not
fit are they split into several sequential requests, each applied on top of the previous one.

The JSON text is produced once, here, and stored in the saved plan: apply sends exactly these
bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..core.canonical import canonical_text
from ..data.service_facts import PATIENT, SERIES, STUDY
from .diff import ADD, REMOVE, REMOVE_INSTANCE, REMOVE_SERIES, UPDATE, Change

# DICOMAttribute blob: min 1, max 30000 in the botocore model (the API reference page still
# says 10000); the emulator enforces the same bound on the decoded bytes.
BLOB_LIMIT = 30000
# What AWS's examples send; used only when the pinned document carries no usable SchemaVersion.
SCHEMA_VERSION = 1.1


def schema_version_of(metadata: dict[str, Any]) -> Any:
    """The SchemaVersion of a metadata document, value and JSON type as the service wrote it
    (``"1.1"`` in AWS's own documents); :data:`SCHEMA_VERSION` when it has none."""
    value = metadata.get("SchemaVersion")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return SCHEMA_VERSION
    return value


@dataclass(frozen=True)
class Request:
    updatable: str | None
    removable: str | None
    force: bool = False
    include_study_image_sets: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"updatableAttributes": self.updatable, "removableAttributes": self.removable,
                "force": self.force, "includeStudyImageSets": self.include_study_image_sets}

    def canonical(self) -> str:
        """The exact request as one text: what a refusal of it is remembered by (hashed)."""
        return canonical_text(self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Request":
        return cls(updatable=data.get("updatableAttributes"),
                   removable=data.get("removableAttributes"),
                   force=bool(data.get("force")),
                   include_study_image_sets=bool(data.get("includeStudyImageSets")))


class PayloadTooLarge(ValueError):
    """A single attribute value does not fit in one document: it cannot be sent at all."""


def encode(document: dict[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as UTF-8 (the byte limit counts bytes)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def _node(doc: dict[str, Any], change: Change) -> dict[str, Any]:
    """The object that holds ``change``'s key at its level, created on the way down."""
    if change.level == PATIENT:
        return doc.setdefault("Patient", {})
    study = doc.setdefault("Study", {})
    if change.level == STUDY:
        return study
    series = study.setdefault("Series", {}).setdefault(change.series, {})
    if change.level == SERIES:
        return series
    return series.setdefault("Instances", {}).setdefault(change.instance, {})


def build_document(changes: Iterable[Change],
                   schema_version: Any = SCHEMA_VERSION) -> dict[str, Any] | None:
    """One attribute document from changes of a single kind (all updates or all removals)."""
    doc: dict[str, Any] = {"SchemaVersion": schema_version}
    for change in changes:
        node = _node(doc, change)
        if change.op in (REMOVE_SERIES, REMOVE_INSTANCE):
            continue  # an empty object removes the whole series / instance
        if change.op == REMOVE:
            node.setdefault("DICOM", {})[change.key] = change.before
        else:
            node.setdefault("DICOM", {})[change.key] = change.after
            if change.private and change.op == ADD:
                # Adding a private element needs its VR (CLI example 5); updating one does not.
                node.setdefault("DICOMVRs", {})[change.key] = change.vr
    return doc if len(doc) > 1 else None


def _chunks(changes: list[Change], limit: int,
            schema_version: Any = SCHEMA_VERSION) -> list[list[Change]]:
    """Packs changes into documents of at most ``limit`` bytes each: all in one when they fit
    (the usual case, one encoding), else greedily in order (re-encoding, but only then)."""
    if not changes:
        return []
    if size(encode(build_document(changes, schema_version))) <= limit:
        return [changes]
    chunks: list[list[Change]] = []
    current: list[Change] = []
    for change in changes:
        if size(encode(build_document([change], schema_version))) > limit:
            raise PayloadTooLarge(f"{change.path}: a single value does not fit in {limit} bytes")
        if current and size(encode(build_document(current + [change], schema_version))) > limit:
            chunks.append(current)
            current = []
        current.append(change)
    chunks.append(current)
    return chunks


def build_requests(changes: list[Change], *, force: bool = False,
                   include_study_image_sets: bool = False,
                   limit: int = BLOB_LIMIT,
                   schema_version: Any = SCHEMA_VERSION) -> list[Request]:
    """The fewest requests that carry ``changes``: one, unless a document exceeds ``limit``;
    then request *i* carries the *i*-th removal document and the *i*-th update document.

    ``force`` is sent only when the spec allows it *and* a change in that request needs it.
    ``schema_version``: that of the pinned metadata document (:func:`schema_version_of`).
    """
    removals = _chunks([c for c in changes if c.op in (REMOVE, REMOVE_SERIES, REMOVE_INSTANCE)],
                       limit, schema_version)
    updates = _chunks([c for c in changes if c.op in (ADD, UPDATE)], limit, schema_version)
    requests = []
    for i in range(max(len(removals), len(updates))):
        rem = removals[i] if i < len(removals) else []
        upd = updates[i] if i < len(updates) else []
        requests.append(Request(
            updatable=encode(build_document(upd, schema_version)) if upd else None,
            removable=encode(build_document(rem, schema_version)) if rem else None,
            force=force and any(c.needs_force for c in rem + upd),
            include_study_image_sets=include_study_image_sets))
    return requests
