"""The emulator's named choices for behaviour that AWS does not document.

HealthImaging leaves many details unspecified (the README's Sources: which error a
stale ``latestVersion`` gets, whether a mismatching removal fails, apply order, burst sizes …).
The emulator never guesses silently: every such detail is a named setting here, with its
allowed values, its default and the reason for that default. The README's table is generated
from (and checked against) this registry, ``--behaviour NAME=VALUE`` and the Python API
(``ThreadedEmulator(behaviours={...})``) set them, and the models read them through
:class:`Behaviours`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Choice:
    name: str
    values: tuple[str, ...] | None   # None: free-form, parsed by ``parse``
    default: str
    why: str
    parse: Callable[[str], Any] = str


def _nonneg_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


CHOICES: tuple[Choice, ...] = (
    Choice("stale_version_error", ("conflict", "validation"), "conflict",
           "[I] a latestVersion that is not the latest: the model describes ConflictException as "
           "'updating a resource can cause an inconsistent state'; AWS's own samples treat "
           "state clashes as ConflictException (README, Sources)."),
    Choice("locked_write_error", ("conflict", "validation"), "conflict",
           "[D] no other write is allowed on a LOCKED image set; [I] the error class. "
           "ConflictException for the same reason as above."),
    Choice("removal_mismatch", ("fail", "ignore"), "fail",
           "[D] the SDK examples say key and value must match; [I] what happens otherwise. "
           "fail = a constraint violation (UPDATE_FAILED, or 400 with --validation sync); "
           "ignore = the removal is skipped silently."),
    Choice("apply_order", ("removals_first", "updates_first"), "removals_first",
           "[I] order of removableAttributes and updatableAttributes in one request "
           "(undocumented). Removals first lets one request replace a value."),
    Choice("schema_version", ("any", "number", "string"), "any",
           "[D] AWS examples send the number 1.1, [O] the sample editor echoes the string "
           "\"1.1\" and AWS's own metadata documents carry the string; [I] both presumably "
           "accepted. GetImageSetMetadata serves the form accepted: the string \"1.1\" (as AWS's "
           "documents) under any and string, the number 1.1 under number, so a client that "
           "repeats the form of the document it read writes what the service takes."),
    Choice("blob_max_bytes", None, "30000",
           "[M] DICOMAttribute max 30000 in the current model (the API page still says 10000); "
           "[I] counted on the decoded bytes.", _positive_int),
    Choice("locked_metadata_read", ("previous", "conflict", "pending"), "previous",
           "[I] GetImageSetMetadata of a version still LOCKED: previous = the content of the "
           "version before it (what a reader saw so far), conflict = 409, pending = the new "
           "content before completion. Clients should never diff against it."),
    Choice("deleted_metadata_read", ("not_found", "conflict"), "not_found",
           "[I] GetImageSetMetadata / ListImageSetVersions of a DELETED image set. GetImageSet "
           "still answers (state DELETED), as the AWS Python sample's wait loop needs."),
    Choice("delete_deleted", ("ok", "conflict"), "ok",
           "[M] the model marks DeleteImageSet idempotent, so repeating it (an SDK retry after a "
           "timeout) must not fail: ok = answer the current DELETING/DELETED state again. "
           "[O] AWS's JS scenario treats ConflictException from DeleteImageSet as 'already "
           "deleted': conflict = that older answer, to exercise such handling."),
    Choice("revert_unknown_version", ("not_found", "validation"), "not_found",
           "[I] revertToVersionId naming a version that does not exist; ResourceNotFound like "
           "GetImageSet?version=N for a missing N."),
    Choice("remove_instance_needs_force", ("false", "true"), "false",
           "[D] the CLI example passes --force when removing an instance, [I] whether it is "
           "required; the constraints page does not list removals among force-only changes."),
    Choice("primary_uid_force", ("refuse", "allow"), "refuse",
           "[D] force does not allow changing Study/Series/SOP Instance UIDs on primary image "
           "sets (update-image-set-metadata, 2025 revision)."),
    Choice("primary_force", ("refuse", "allow"), "refuse",
           "[D] the 2025 update-image-set-metadata page: force overrides the DICOM metadata "
           "constraints of non-primary image sets. refuse = on a primary image set force lifts "
           "nothing (a change that needs force is a constraint violation); allow = force works "
           "as on non-primary sets (UIDs still follow primary_uid_force)."),
    Choice("promote_onto_primary", ("copy_failed", "demote_existing"), "copy_failed",
           "[D] CopyImageSet promoteToPrimary returns a new primary image set; [I] what happens "
           "when the study already has one (two primaries with the same UIDs must not exist): "
           "copy_failed = the copy ends COPY_FAILED with a message; demote_existing = the old "
           "primary image set becomes non-primary when the copy completes."),
    Choice("primary_restricted_levels", ("patient_series", "patient_study", "off"),
           "patient_series",
           "[D, wording unverified] the 2025 update-image-set-metadata page: 'Patient- and "
           "Series-level elements cannot be updated on primary image sets' (it may mean "
           "Patient/Study). patient_series by default: it is what the guide (and its "
           "translations) literally says, and the stricter of the readings a client must "
           "survive; off is the pre-2025 behaviour AWS's older CLI examples show."),
    Choice("primary_restriction_include_study", ("allowed", "refused"), "allowed",
           "[I] whether includeStudyImageSets=true lifts the restriction for the study-wide "
           "levels (Patient, Study): the guide presents the flag as the way to keep a study's "
           "primary image sets consistent, so allowed; a Series-level element stays refused "
           "(a series belongs to one image set: the flag has nothing to keep consistent)."),
    Choice("include_study_scope", ("patient_study", "all_levels"), "patient_study",
           "[I] what includeStudyImageSets applies to the study's other primary image sets: "
           "patient_study = only the Patient- and Study-level parts (series and instances "
           "belong to one image set); all_levels = also Series/Instance parts for series the "
           "other set contains."),
    Choice("study_peer_status", ("UPDATING_FOR_STUDY_CONSISTENCY", "UPDATING"),
           "UPDATING_FOR_STUDY_CONSISTENCY",
           "[M] the status exists in the enum; [I] that the study's other image sets show it "
           "while an includeStudyImageSets update is in flight."),
    Choice("length_limits", ("enforce", "off"), "enforce",
           "[D] import-time length limits (dicom-element-constraints); [I] that updates are "
           "held to them too. Violations are constraint violations (not lifted by force)."),
    Choice("versions_order", ("desc", "asc"), "desc",
           "[D] the CLI example of list-image-set-versions lists newest first; ordering is not "
           "specified."),
    Choice("default_page_size", None, "50",
           "[I] page size when maxResults is absent (the model allows 1..50).", _positive_int),
    Choice("search_index_lag", None, "0",
           "[I] seconds (scaled by --time-scale) before a completed version shows in "
           "SearchImageSets (a search index may lag behind a finished update). Seeded image "
           "sets stand for data imported long ago: searchable at once.", _nonneg_float),
    Choice("write_burst", None, "1",
           "[D] English throttling page: burst 1 for Update/Copy/DeleteImageSet; a translated "
           "revision shows 10. Used by --quotas aws for those three operations.", _positive_int),
    Choice("seed_primary", ("true", "false"), "true",
           "[D] imports since 2025-06-30 create primary image sets when the study has no "
           "conflicting data; seeded image sets stand for such imports."),
    Choice("instance_storage_keys", ("on", "off"), "on",
           "[D] current documents carry StoredTransferSyntaxUID per instance "
           "(supported-transfer-syntaxes page); [I] ChecksumType (value DECOMPRESSED, from "
           "an illustrative document). The real 2023 sample has neither: off = "
           "that shape."),
    Choice("datastore_create_delay", None, "0",
           "[I] seconds (scaled by --time-scale) a new data store stays CREATING.",
           _nonneg_float),
    Choice("import_output_uri", ("job_folder", "as_given"), "job_folder",
           "[D] results go under outputS3Uri in a <datastoreId>-DicomImport-<jobId>/ folder "
           "(understanding-import-jobs); [O] AWS's Python and Java examples read "
           "GetDICOMImportJob's outputS3Uri + 'job-output-manifest.json', so the job's "
           "outputS3Uri (and the events') names that folder. as_given = the caller's prefix."),
    Choice("import_merge_event", ("updated", "created"), "updated",
           "[D] an import that joins a study's existing primary image set increments its "
           "version (understanding-import-jobs); [I] which event says so: updated = 'Image Set "
           "Updated', created = 'Image Set Created' with the new imageSetVersion."),
)

BY_NAME = {c.name: c for c in CHOICES}


class BehaviourError(ValueError):
    """An unknown behaviour name or a value it does not allow."""


class Behaviours:
    """Resolved settings: attribute access by name (``b.apply_order``)."""

    def __init__(self, overrides: dict[str, Any] | None = None):
        self._values: dict[str, Any] = {c.name: c.parse(c.default) for c in CHOICES}
        for name, raw in (overrides or {}).items():
            self.set(name, raw)

    def set(self, name: str, raw: Any) -> None:
        choice = BY_NAME.get(name)
        if choice is None:
            raise BehaviourError(f"unknown behaviour {name!r}; known: {', '.join(BY_NAME)}")
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if choice.values is not None and text not in choice.values:
            raise BehaviourError(f"behaviour {name} must be one of {', '.join(choice.values)}, "
                                 f"got {text!r}")
        try:
            self._values[name] = choice.parse(text)
        except ValueError as exc:
            raise BehaviourError(f"behaviour {name}: {exc}") from None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def markdown_table() -> str:
    """The README's behaviour table, generated from :data:`CHOICES` (a test keeps them equal)."""
    lines = ["| name | values | default | evidence / why |", "| --- | --- | --- | --- |"]
    for c in CHOICES:
        values = ", ".join(f"`{v}`" for v in c.values) if c.values else {
            _positive_int: "integer ≥ 1", _nonneg_float: "seconds ≥ 0"}.get(c.parse, "text")
        lines.append(f"| `{c.name}` | {values} | `{c.default}` | {c.why.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
