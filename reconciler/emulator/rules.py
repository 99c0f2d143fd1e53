"""UpdateImageSetMetadata documents: parsing and the service's metadata constraints.

Two kinds of problems, kept apart because the service reports them differently:

* :class:`MalformedDocument` — the blob is not a SchemaVersion-1.1 attribute document at all
  (not UTF-8 JSON, no ``SchemaVersion``, wrong structure). Always a synchronous 400.
* *violations* — a well-formed document that breaks a documented constraint
  (the developer guide's dicom-metadata-constraints page): generated attributes, level placement,
  ``force`` rules, unknown series/instances, removals whose value does not match. These end as
  ``UPDATE_FAILED`` (or a 400 with ``--validation sync``); :func:`apply_update` returns them.

Violation messages name attribute keywords, levels and paths with UIDs replaced by ``*``:
never a metadata value (they may be PHI). They are sanitised to the model's ``Message``
pattern ``[\\w -:`]+``.

The level table and the generated / force-required attribute lists come from
``reconciler.data.service_facts``; DICOM VRs and value checks from pydicom's dictionary and validators.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydicom import config as dicom_config
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.valuerep import validate_value

from reconciler.data import service_facts

PRIVATE_KEY = re.compile(r"[0-9A-Fa-f]{8}")
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
STRING_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
NUMBER_VRS = frozenset("US SS UL SL UV SV FL FD".split())
BINARY_VRS = frozenset("OB OW OD OF OL OV UN".split())
# Keys of an Instance object that the service generates (see the README's seeded data).
GENERATED_INSTANCE_KEYS = frozenset({"ImageFrames", "StoredTransferSyntaxUID", "ChecksumType"})
GENERATED_TOP_KEYS = frozenset({"DatastoreID", "ImageSetID"})
_MESSAGE_UNSAFE = re.compile(r"[^A-Za-z0-9_ -:`]")


class MalformedDocument(ValueError):
    """The blob is not an attribute document; the request fails at once with 400."""


def sanitise_message(text: str, limit: int = 2048) -> str:
    """Fit a message to the model's ``Message`` shape: ``[\\w -:`]+``, at most 2048 chars."""
    clean = re.sub(r"\s+", " ", _MESSAGE_UNSAFE.sub(" ", text)).strip() or "UPDATE_FAILED"
    return clean[:limit]


def is_private_key(key: str) -> bool:
    return bool(PRIVATE_KEY.fullmatch(key)) and int(key[:4], 16) % 2 == 1


def parse_document(blob: bytes, which: str, schema_version: str = "any") -> dict[str, Any]:
    """Decode one ``updatableAttributes`` / ``removableAttributes`` blob and check its shape."""
    try:
        doc = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedDocument(f"{which} is not valid UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise MalformedDocument(f"{which} must be a JSON object")
    if "SchemaVersion" not in doc:
        raise MalformedDocument(f"{which} has no SchemaVersion")
    sv = doc["SchemaVersion"]
    allowed = {"any": (1.1, "1.1"), "number": (1.1,), "string": ("1.1",)}[schema_version]
    if isinstance(sv, bool) or sv not in allowed or type(sv) not in {type(a) for a in allowed}:
        raise MalformedDocument(f"{which} has an unsupported SchemaVersion (expected 1.1)")
    for key, value in doc.items():
        if key in ("SchemaVersion",) or key in GENERATED_TOP_KEYS:
            continue
        if key == "Patient":
            _shape(value, {"DICOM"}, f"{which}.Patient")
        elif key == "Study":
            _shape(value, {"DICOM", "Series"}, f"{which}.Study")
            for suid, series in _mapping(value.get("Series", {}), f"{which}.Study.Series").items():
                _shape(series, {"DICOM", "Instances"}, f"{which}.Study.Series.*")
                instances = _mapping(series.get("Instances", {}), f"{which}.Study.Series.*.Instances")
                for instance in instances.values():
                    _shape(instance, {"DICOM", "DICOMVRs"} | GENERATED_INSTANCE_KEYS,
                           f"{which}.Study.Series.*.Instances.*")
                    _mapping(instance.get("DICOMVRs", {}), "DICOMVRs")
        else:
            raise MalformedDocument(f"{which} has an unknown top-level key {key!r}")
    return doc


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedDocument(f"{where} must be a JSON object")
    return value


def _shape(value: Any, allowed: set[str], where: str) -> None:
    _mapping(value, where)
    unknown = set(value) - allowed
    if unknown:
        raise MalformedDocument(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    if "DICOM" in value:
        _mapping(value["DICOM"], f"{where}.DICOM")


# --------------------------------------------------------------------------- operations
@dataclass
class Op:
    """One attribute-level change extracted from a document."""

    kind: str                    # set | remove | remove_series | remove_instance
    level: str                   # Patient | Study | Series | Instance
    key: str = ""
    value: Any = None
    series: str | None = None
    instance: str | None = None
    vrs: dict[str, str] = field(default_factory=dict)  # DICOMVRs sent with an instance

    @property
    def path(self) -> str:
        if self.level == service_facts.PATIENT:
            base = "Patient"
        elif self.level == service_facts.STUDY:
            base = "Study"
        elif self.level == service_facts.SERIES:
            base = "Study.Series.*"
        else:
            base = "Study.Series.*.Instances.*"
        if self.kind in ("remove_series", "remove_instance"):
            return base
        return f"{base}.DICOM.{self.key}"


def extract_ops(doc: dict[str, Any], removal: bool) -> tuple[list[Op], list[str]]:
    """Flatten a parsed document into operations, plus violations found on the way."""
    kind = "remove" if removal else "set"
    ops: list[Op] = []
    violations: list[str] = []
    for key in GENERATED_TOP_KEYS & set(doc):
        violations.append(f"{key} is generated by the service and cannot be changed")
    for key, value in doc.get("Patient", {}).get("DICOM", {}).items():
        ops.append(Op(kind, service_facts.PATIENT, key, value))
    study = doc.get("Study", {})
    for key, value in study.get("DICOM", {}).items():
        ops.append(Op(kind, service_facts.STUDY, key, value))
    for suid, series in study.get("Series", {}).items():
        if removal and not series:
            ops.append(Op("remove_series", service_facts.SERIES, series=suid))
            continue
        for key, value in series.get("DICOM", {}).items():
            ops.append(Op(kind, service_facts.SERIES, key, value, series=suid))
        for sop, instance in series.get("Instances", {}).items():
            if removal and not instance:
                ops.append(Op("remove_instance", service_facts.INSTANCE, series=suid, instance=sop))
                continue
            for key in GENERATED_INSTANCE_KEYS & set(instance):
                violations.append(f"Study.Series.*.Instances.*.{key} is generated by the "
                                  f"service and cannot be changed")
            vrs = {k.upper(): v for k, v in instance.get("DICOMVRs", {}).items()}
            for key, value in instance.get("DICOM", {}).items():
                ops.append(Op(kind, service_facts.INSTANCE, key, value, series=suid, instance=sop,
                              vrs=vrs))
    return ops, violations


# ------------------------------------------------------------------------- value checks
def vr_of(key: str) -> str | None:
    try:
        return dictionary_VR(key) if key in keyword_dict else None
    except KeyError:
        return None


def vr_problem(vr: str | None, value: Any) -> bool:
    """True when ``value`` (in the service's JSON form) does not fit ``vr``."""
    if value is None or vr is None or " or " in vr:
        return False
    if vr == "SQ":
        return not (isinstance(value, list) and all(isinstance(i, dict) for i in value))
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            continue
        if vr in STRING_VRS:
            if not isinstance(item, str):
                return True
            try:
                validate_value(vr, item, dicom_config.RAISE)
            except (ValueError, TypeError):
                return True
        elif vr in NUMBER_VRS:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                return True
            if vr not in ("FL", "FD") and not isinstance(item, int):
                return True
            try:
                validate_value(vr, item, dicom_config.RAISE)
            except (ValueError, TypeError):
                return True
        elif vr in BINARY_VRS:
            try:
                base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError, TypeError):
                return True
        elif vr == "AT":
            if not (isinstance(item, str) and PRIVATE_KEY.fullmatch(item)):
                return True
    return False


def is_sequence(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(i, dict) for i in value)


def is_multi_valued(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 1 and not is_sequence(value)


def exceeds_length_limit(key: str, value: Any) -> bool:
    limit = service_facts.length_limits().get(key)
    if limit is None or value is None:
        return False
    if key.startswith("NumberOfStudyRelated"):
        try:
            return int(str(value).strip()) > limit
        except ValueError:
            return False
    return any(isinstance(v, str) and len(v) > limit
               for v in (value if isinstance(value, list) else [value]))
