"""DICOM-aware diff of the *managed essence*: only what a spec declares is compared.

The live metadata document is HealthImaging's JSON (Patient / Study / Series.<uid> /
Instances.<uid>). For each declared attribute the diff yields at most one :class:`Change`,
comparing values the way DICOM defines equality, so that a value the service pads or formats
differently never shows up as a perpetual diff:

* PN: trailing spaces, empty trailing components (``DOE^JANE^^``) and groups are insignificant;
* DS / IS: numeric equality (``"1.0"`` = ``"1"``, ``"6.8E-01"`` = ``"0.68"``);
* text VRs: trailing spaces (leading ones too for the short-string VRs, as PS3.5 §6.2 says);
* multi-valued: arrays compared item by item (a backslash-joined string equals its array);
* present-but-empty: ``null``, ``""`` and ``[]`` are all the same empty value.

Series and instances absent from the live document cannot be created by an update; declaring
attributes under one is an :class:`ImageSetProblem`, not a change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Iterator

from ..data import service_facts
from ..data.service_facts import INSTANCE, PATIENT, SERIES, STUDY
from ..dicom.dictionary import vr_of_keyword
from ..dicom.paths import attribute_path, instance_path, parse, series_path
from ..spec.types import Attribute, DesiredAttributes

ADD, UPDATE, REMOVE = "add", "update", "remove"
REMOVE_SERIES, REMOVE_INSTANCE = "remove-series", "remove-instance"

_EMPTY = ("<empty>",)  # canonical form of every present-but-empty value
_NUMERIC_BINARY = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "US or SS", "US or SS or OW"}
_TRAILING_ONLY = {"LT", "ST", "UT", "UR", "PN"}
_SINGLE_VALUED_TEXT = {"LT", "ST", "UT", "UR"}   # a backslash is a character, not a delimiter


class ImageSetProblem(Exception):
    """The spec cannot be planned against this image set (e.g. a declared series is missing).
    The message names UIDs and keys only."""


@dataclass(frozen=True)
class Change:
    """One attribute-level change (or the removal of a whole series / instance)."""

    op: str                    # add | update | remove | remove-series | remove-instance
    level: str                 # Patient | Study | Series | Instance
    key: str                   # keyword or private tag; "" for series / instance removal
    vr: str | None
    before: Any = None         # live value (None for add)
    after: Any = None          # value to send (None for removals)
    series: str | None = None
    instance: str | None = None
    private: bool = False

    @property
    def path(self) -> str:
        """The same path form as :meth:`DesiredAttributes.managed_paths`."""
        if self.level in (PATIENT, STUDY):
            return attribute_path(self.level, self.key)
        if self.level == SERIES:
            return series_path(self.series, None if self.op == REMOVE_SERIES else self.key)
        return instance_path(self.series, self.instance,
                             None if self.op == REMOVE_INSTANCE else self.key)

    @property
    def needs_force(self) -> bool:
        """HealthImaging's force rules (dicom-metadata-constraints): UIDs and StudyID, private
        elements, sequences, multi-valued values."""
        if self.op in (REMOVE_SERIES, REMOVE_INSTANCE):
            return False
        if self.private or self.key in service_facts.FORCE_REQUIRED_ATTRIBUTES or self.vr == "SQ":
            return True
        value = self.after if self.op != REMOVE else self.before
        return isinstance(value, list) and len(value) > 1


# -- DICOM value equality ------------------------------------------------------------------
def _canon_pn(text: str) -> str:
    groups = []
    for group in text.rstrip(" ").split("="):
        comps = [c.rstrip(" ") for c in group.split("^")]
        while comps and not comps[-1]:
            comps.pop()
        groups.append("^".join(comps))
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _canon_scalar(value: Any, vr: str | None) -> Any:
    if value is None:
        return _EMPTY
    if isinstance(value, dict):  # a sequence item
        return tuple(sorted((k, canonical(v, vr_of_keyword(k))) for k, v in value.items()))
    if isinstance(value, bool):
        return value
    if vr in _NUMERIC_BINARY or isinstance(value, (int, float)):
        try:
            number = Decimal(str(value).strip())
            return number.normalize() if number == number else value  # NaN stays itself
        except InvalidOperation:
            return str(value).strip() if isinstance(value, str) else value
    if not isinstance(value, str):
        return value
    if vr == "PN":
        text = _canon_pn(value)
    elif vr in _TRAILING_ONLY:
        text = value.rstrip(" ")
    else:
        text = value.strip(" \x00")
    if not text:
        return _EMPTY
    if vr in ("DS", "IS"):
        try:
            return Decimal(text).normalize()
        except InvalidOperation:
            return text
    return text


def canonical(value: Any, vr: str | None) -> Any:
    """A hashable form in which DICOM-equal values are equal."""
    if value is None:
        return _EMPTY
    if isinstance(value, str) and "\\" in value and vr not in _SINGLE_VALUED_TEXT:
        value = value.split("\\")
    if isinstance(value, list):
        if vr == "SQ":
            return tuple(_canon_scalar(item, None) for item in value) or _EMPTY
        items = tuple(_canon_scalar(item, vr) for item in value)
        if not items or all(item == _EMPTY for item in items):
            return _EMPTY
        return items[0] if len(items) == 1 else items
    return _canon_scalar(value, vr)


def dicom_equal(live: Any, desired: Any, vr: str | None) -> bool:
    return canonical(live, vr) == canonical(desired, vr)


# -- the diff ------------------------------------------------------------------------------
def _send_form(attr: Attribute) -> Any:
    # HealthImaging shows an empty element as null; a spec's "" asks for exactly that.
    return None if attr.value == "" else attr.value


def _diff_attrs(declared: dict[str, Attribute], live: dict[str, Any], level: str,
                series: str | None = None, instance: str | None = None,
                live_vrs: dict[str, str] | None = None) -> Iterator[Change]:
    for key, attr in declared.items():
        # A private element's VR is the one HealthImaging recorded, when it has one; a spec
        # removing a private element does not give one.
        live_vr = (live_vrs or {}).get(key)
        vr = live_vr if attr.private and (attr.absent or not attr.vr) and live_vr else attr.vr or live_vr
        common = dict(level=level, key=key, vr=vr, series=series, instance=instance,
                      private=attr.private)
        present = key in live
        if attr.absent:
            if present:
                yield Change(op=REMOVE, before=live[key], **common)
        elif not present:
            yield Change(op=ADD, after=_send_form(attr), **common)
        elif not dicom_equal(live[key], attr.value, vr):
            yield Change(op=UPDATE, before=live[key], after=_send_form(attr), **common)


def _dicom(node: Any) -> dict[str, Any]:
    value = node.get("DICOM") if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def diff(desired: DesiredAttributes, metadata: dict[str, Any],
         image_set_id: str = "") -> list[Change]:
    """Every change needed to bring ``metadata`` to ``desired``, in document order."""
    changes: list[Change] = []
    changes.extend(_diff_attrs(desired.patient, _dicom(metadata.get("Patient")), PATIENT))
    study = metadata.get("Study") if isinstance(metadata.get("Study"), dict) else {}
    changes.extend(_diff_attrs(desired.study, _dicom(study), STUDY))
    for suid, series_spec in desired.series.items():
        live = _present(study, "Series", suid, series_spec.absent, changes,
                        Change(op=REMOVE_SERIES, level=SERIES, key="", vr=None, series=suid),
                        f"series {suid} is not in image set {image_set_id}; an update cannot "
                        f"add a series")
        if live is None:
            continue
        changes.extend(_diff_attrs(series_spec.attributes, _dicom(live), SERIES, series=suid))
        for sop, inst_spec in series_spec.instances.items():
            linst = _present(live, "Instances", sop, inst_spec.absent, changes,
                             Change(op=REMOVE_INSTANCE, level=INSTANCE, key="", vr=None,
                                    series=suid, instance=sop),
                             f"instance {sop} of series {suid} is not in image set "
                             f"{image_set_id}; an update cannot add an instance")
            if linst is not None:
                changes.extend(_diff_attrs(inst_spec.attributes, _dicom(linst), INSTANCE,
                                           series=suid, instance=sop,
                                           live_vrs=linst.get("DICOMVRs") or {}))
    return changes


def _present(parent: dict[str, Any], kind: str, uid: str, absent: bool, changes: list[Change],
             removal: Change, missing: str) -> dict[str, Any] | None:
    """The live series or instance ``uid`` of ``parent[kind]`` whose attributes to diff, or
    None. One the spec wants absent is a ``removal`` when present (appended to ``changes``);
    one the spec declares must be there (an update cannot add it): ImageSetProblem."""
    node = parent.get(kind)
    live = node.get(uid) if isinstance(node, dict) else None
    if absent:
        if live is not None:
            changes.append(removal)
        return None
    if live is None:
        raise ImageSetProblem(f"{missing} (declare it null if it must be absent)")
    return live


# -- the managed essence as comparable values (state hashes and drift) ----------------------
PRESENT = "<present>"


def comparable(value: Any, vr: str | None) -> Any:
    """The canonical form as plain JSON data (tuples → lists, numbers → strings), so that it
    can be hashed; ``None`` stays ``None`` (absent)."""
    if value is None:
        return None
    return json.loads(json.dumps(canonical(value, vr), default=str))


def desired_values(desired: DesiredAttributes) -> dict[str, Any]:
    """Path → comparable desired value (``None``: must be absent), for every managed path."""
    values: dict[str, Any] = {}

    def put(paths: Iterable[tuple[str, Attribute]]) -> None:
        for path, attr in paths:
            values[path] = None if attr.absent else comparable(attr.value, attr.vr)

    put((attribute_path(PATIENT, k), a) for k, a in desired.patient.items())
    put((attribute_path(STUDY, k), a) for k, a in desired.study.items())
    for suid, series in desired.series.items():
        if series.absent:
            values[series_path(suid)] = None
            continue
        put((series_path(suid, k), a) for k, a in series.attributes.items())
        for sop, inst in series.instances.items():
            if inst.absent:
                values[instance_path(suid, sop)] = None
            else:
                put((instance_path(suid, sop, k), a) for k, a in inst.attributes.items())
    return values


def value_at(path: str, metadata: dict[str, Any]) -> tuple[bool, Any, str | None]:
    """``(present, raw value, VR)`` at a managed path of a metadata document. For a series or
    instance path the value is :data:`PRESENT`; the VR is the dictionary's, or for a private
    element the one HealthImaging recorded in ``DICOMVRs``."""
    where = parse(path)
    if where.series is None:
        node = _dicom(metadata.get(where.level))
        return where.key in node, node.get(where.key), vr_of_keyword(where.key)
    study = metadata.get("Study") if isinstance(metadata.get("Study"), dict) else {}
    all_series = study.get("Series") if isinstance(study.get("Series"), dict) else {}
    node, vrs = all_series.get(where.series), {}
    if node is not None and where.instance:
        instances = node.get("Instances") if isinstance(node.get("Instances"), dict) else {}
        node = instances.get(where.instance)
        vrs = (node or {}).get("DICOMVRs") or {}
    if node is None:
        return False, None, None
    if where.key is None:
        return True, PRESENT, None
    dicom = _dicom(node)
    return where.key in dicom, dicom.get(where.key), vrs.get(where.key) or vr_of_keyword(where.key)


def live_values(paths: Iterable[str], metadata: dict[str, Any]) -> dict[str, Any]:
    """Path → comparable live value at each managed path (``None``: absent; present-but-empty
    compares as the empty value, never as absent)."""
    values: dict[str, Any] = {}
    for path in paths:
        present, value, vr = value_at(path, metadata)
        if not present:
            values[path] = None
        elif value == PRESENT:
            values[path] = PRESENT
        else:
            values[path] = comparable("" if value is None else value, vr)
    return values
