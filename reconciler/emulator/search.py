"""SearchImageSets: the search index view of an image set, filters and sort.

The index entry of an image set is derived from its newest *completed* version (an update in
flight does not show until it finishes; with ``search_index_lag`` not until some time after),
as clients should assume (the index may lag behind a finished update). Seeded image sets (and
those of the Python API's ``add_image_set``) stand for data imported long ago: their first
version is in the index from the start. ``DICOMTags`` are taken from that version's
metadata; values longer than the model allows are cut to fit, numbers that do not parse are
left out.

Everything here reads a version's :class:`~.entities.Summary` (the few fields search needs,
kept beside the compressed document), never the document itself; :class:`Index` maps the
values EQUAL filters name to the image sets that ever held them, so a search for one study
looks at that study's image sets, not at the whole fleet. It is a superset (values are only
ever added), and every candidate still goes through the same entry and filter rules, so
results are exactly those of a full scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .entities import ImageSet, Summary, Version
from .protocol import service_model, validation

ATTRIBUTES = ("DICOMPatientId", "DICOMAccessionNumber", "DICOMStudyId", "DICOMStudyInstanceUID",
              "DICOMSeriesInstanceUID", "createdAt", "updatedAt", "DICOMStudyDateAndTime",
              "isPrimary")


@dataclass
class Entry:
    image_set: ImageSet
    version: Version

    @property
    def summary(self) -> Summary:
        return self.version.document.summary

    def patient(self, key: str) -> Any:
        return self.summary.patient.get(key)

    def study(self, key: str) -> Any:
        return self.summary.study.get(key)

    def series_uids(self) -> tuple[str, ...]:
        return self.summary.series_uids

    @property
    def updated_at(self) -> float:
        return self.version.updated_at

    def study_date_time(self) -> tuple[str, str]:
        return _text(self.study("StudyDate")) or "", normalise_time(_text(self.study("StudyTime")))


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def normalise_time(value: str | None) -> str:
    """DICOM TM (``HH``, ``HHMM``, ``HHMMSS[.F]``, ``HH:MM:SS``) → ``HHMMSS.FFFFFF``."""
    text = (value or "").strip().replace(":", "")
    main, _, frac = text.partition(".")
    return main.ljust(6, "0")[:6] + "." + frac.ljust(6, "0")[:6]


def entries(image_sets: list[ImageSet], now: float, lag: float) -> list[Entry]:
    out = []
    for image_set in image_sets:
        if image_set.deleted:
            continue
        for version in reversed(image_set.versions):
            if not image_set.in_flight(version) and (
                    version.indexed or version.updated_at <= now - lag):
                out.append(Entry(image_set, version))
                break
    return out


# -------------------------------------------------------------------------------- index
# The EQUAL filters the index answers, and how each reads a summary (as _comparable does).
INDEXED = {
    "DICOMPatientId": lambda s: [_text(s.patient.get("PatientID"))],
    "DICOMAccessionNumber": lambda s: [_text(s.study.get("AccessionNumber"))],
    "DICOMStudyId": lambda s: [_text(s.study.get("StudyID"))],
    "DICOMStudyInstanceUID": lambda s: [_text(s.study.get("StudyInstanceUID"))],
    "DICOMSeriesInstanceUID": lambda s: list(s.series_uids),
}


class Index:
    """(attribute, value) → ids of the image sets any version of which held that value."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, Any], set[str]] = {}

    def add(self, image_set_id: str, summary: Summary) -> None:
        for attribute, values in INDEXED.items():
            for value in values(summary):
                if value is not None:
                    self._ids.setdefault((attribute, value), set()).add(image_set_id)

    def candidates(self, filters: list[tuple[str, str, list[Any]]]) -> set[str] | None:
        """The image sets that may match every filter (None: no filter the index answers)."""
        found: set[str] | None = None
        for attribute, operator, operands in filters:
            if operator != "EQUAL" or attribute not in INDEXED:
                continue
            try:
                ids = self._ids.get((attribute, operands[0]), set())
            except TypeError:                                   # an unhashable operand
                continue
            found = set(ids) if found is None else found & ids
        return found

    def clear(self) -> None:
        self._ids.clear()


# ------------------------------------------------------------------------------ filters
def _comparable(entry: Entry, attribute: str) -> Any:
    if attribute == "DICOMPatientId":
        return _text(entry.patient("PatientID"))
    if attribute == "DICOMAccessionNumber":
        return _text(entry.study("AccessionNumber"))
    if attribute == "DICOMStudyId":
        return _text(entry.study("StudyID"))
    if attribute == "DICOMStudyInstanceUID":
        return _text(entry.study("StudyInstanceUID"))
    if attribute == "createdAt":
        return wire_time(entry.image_set.created_at)
    if attribute == "updatedAt":
        return wire_time(entry.updated_at)
    if attribute == "DICOMStudyDateAndTime":
        return entry.study_date_time()
    if attribute == "isPrimary":
        return entry.image_set.is_primary
    raise AssertionError(attribute)


def wire_time(epoch: float) -> float:
    """A timestamp as clients see it: the wire carries milliseconds (epoch seconds with three
    decimals), so a filter built from a value read back must compare at that precision."""
    return round(epoch, 3)


def _operand(attribute: str, value: Any) -> Any:
    if attribute == "DICOMStudyDateAndTime":
        # DICOMStudyTime is optional and defaults to 00:00 (the CLI's search-image-sets
        # documentation), for EQUAL as for BETWEEN.
        return value["DICOMStudyDate"], normalise_time(value.get("DICOMStudyTime"))
    if attribute in ("createdAt", "updatedAt"):
        return wire_time(value)
    return value


def _matches(entry: Entry, attribute: str, operator: str, operands: list[Any]) -> bool:
    if attribute == "DICOMSeriesInstanceUID":
        uids = set(entry.series_uids())
        if operator == "EQUAL":
            return operands[0] in uids
        return any(operands[0] <= uid <= operands[1] for uid in uids)
    actual = _comparable(entry, attribute)
    if actual is None:
        return False
    if operator == "EQUAL":
        return actual == operands[0][:2] if attribute == "DICOMStudyDateAndTime" \
            else actual == operands[0]
    low, high = (o[:2] if attribute == "DICOMStudyDateAndTime" else o for o in operands)
    return low <= actual <= high


def compile_filters(criteria: dict[str, Any] | None) -> list[tuple[str, str, list[Any]]]:
    compiled = []
    for index, flt in enumerate((criteria or {}).get("filters") or [], start=1):
        operator, values = flt["operator"], flt["values"]
        names = [next(k for k, v in value.items() if v is not None) for value in values]
        if len(set(names)) != 1:
            raise validation(f"filter {index}: all values must use the same attribute")
        attribute = names[0]
        want = 1 if operator == "EQUAL" else 2
        if len(values) != want:
            raise validation(f"filter {index}: operator {operator} takes {want} value"
                             f"{'s' if want > 1 else ''}")
        operands = []
        for value in values:
            raw = value[attribute]
            operand = _operand(attribute, raw)
            if attribute == "DICOMStudyDateAndTime":
                operand = operand + (bool(raw.get("DICOMStudyTime")),)
            operands.append(operand)
        if operator == "BETWEEN" and attribute == "isPrimary":
            raise validation(f"filter {index}: BETWEEN is not supported for isPrimary")
        compiled.append((attribute, operator, operands))
    return compiled


def search(all_entries: list[Entry], criteria: dict[str, Any] | None) -> list[Entry]:
    filters = compile_filters(criteria)
    found = [e for e in all_entries
             if all(_matches(e, a, op, vals) for a, op, vals in filters)]
    sort = (criteria or {}).get("sort") or {}
    field = sort.get("sortField", "updatedAt")
    descending = sort.get("sortOrder", "DESC") == "DESC"

    def key(entry: Entry) -> tuple:
        if field == "DICOMStudyDateAndTime":
            primary: Any = entry.study_date_time()
        elif field == "createdAt":
            primary = entry.image_set.created_at
        else:
            primary = entry.updated_at
        return primary, entry.image_set.image_set_id

    return sorted(found, key=key, reverse=descending)


# ------------------------------------------------------------------------------ summary
def _fit(shape_name: str, value: str | None) -> str | None:
    if value is None:
        return None
    limit = service_model().shape_for(shape_name).metadata.get("max")
    return value[:limit] if limit else value


def _int(value: Any) -> int | None:
    try:
        return int(str(_text(value)).strip())
    except (TypeError, ValueError):
        return None


def dicom_tags(entry: Entry) -> dict[str, Any]:
    uids = entry.series_uids()
    first = entry.summary.first_series
    tags = {
        "DICOMPatientId": _text(entry.patient("PatientID")),
        "DICOMPatientName": _text(entry.patient("PatientName")),
        "DICOMPatientBirthDate": _text(entry.patient("PatientBirthDate")),
        "DICOMPatientSex": _text(entry.patient("PatientSex")),
        "DICOMStudyInstanceUID": _text(entry.study("StudyInstanceUID")),
        "DICOMStudyId": _text(entry.study("StudyID")),
        "DICOMStudyDescription": _text(entry.study("StudyDescription")),
        "DICOMAccessionNumber": _text(entry.study("AccessionNumber")),
        "DICOMSeriesInstanceUID": uids[0] if uids else None,
        "DICOMSeriesModality": _text(first.get("Modality")),
        "DICOMSeriesBodyPart": _text(first.get("BodyPartExamined")),
        "DICOMStudyDate": _text(entry.study("StudyDate")),
        "DICOMStudyTime": _text(entry.study("StudyTime")),
    }
    shapes = service_model().shape_for("DICOMTags").members
    out: dict[str, Any] = {k: _fit(shapes[k].name, v) for k, v in tags.items() if v is not None}
    out["DICOMNumberOfStudyRelatedSeries"] = len(uids)
    out["DICOMNumberOfStudyRelatedInstances"] = entry.summary.instances
    number = _int(first.get("SeriesNumber"))
    if number is not None and -2**31 <= number < 2**31:
        out["DICOMSeriesNumber"] = number
    return out


def summary(entry: Entry) -> dict[str, Any]:
    return {"imageSetId": entry.image_set.image_set_id,
            "version": entry.version.version_id,
            "createdAt": entry.image_set.created_at,
            "updatedAt": entry.updated_at,
            "lastAccessedAt": entry.image_set.last_accessed_at,
            "storageTier": "FREQUENT_ACCESS",
            "DICOMTags": dicom_tags(entry),
            "isPrimary": entry.image_set.is_primary}
