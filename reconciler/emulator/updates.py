"""Applying one UpdateImageSetMetadata request to a metadata document.

:func:`apply_update` is pure: it takes the current document and the parsed blobs and returns
the new document plus the list of constraint violations (empty = the update succeeds). The
backend decides what a violation means (``UPDATE_FAILED`` or a synchronous 400).

Invariants kept here:

* the input document is never mutated (the version store keeps every version);
* series are keyed by their ``SeriesInstanceUID`` and instances by ``SOPInstanceUID``, also
  after a forced UID change (the map key follows the new UID);
* updates never create series or instances; an emptied series disappears with its last
  instance, and an image set keeps at least one instance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import keyword_dict

from reconciler.data import service_facts

from .behaviours import Behaviours
from .rules import (
    PRIVATE_KEY, UIDS, Op, exceeds_length_limit, extract_ops, is_multi_valued, is_private_key,
    is_sequence, vr_of, vr_problem)

RESTRICTED = {"patient_series": (service_facts.PATIENT, service_facts.SERIES),
              "patient_study": (service_facts.PATIENT, service_facts.STUDY)}


@dataclass
class UpdateContext:
    force: bool = False                # the force that lifts constraints (see for_set)
    is_primary: bool = False
    include_study: bool = False
    force_refused: bool = False        # force was asked for but does not apply here

    @classmethod
    def for_set(cls, force: bool, is_primary: bool, include_study: bool,
                b: Behaviours) -> "UpdateContext":
        """force applies to non-primary image sets only (primary_force)."""
        refused = force and is_primary and b.primary_force == "refuse"
        return cls(force and not refused, is_primary, include_study, refused)


def apply_update(current: dict[str, Any], updatable: dict | None, removable: dict | None,
                 ctx: UpdateContext, behaviours: Behaviours) -> tuple[dict[str, Any], list[str]]:
    doc = copy.deepcopy(current)
    violations: list[str] = []
    set_ops: list[Op] = []
    remove_ops: list[Op] = []
    if updatable is not None:
        set_ops, found = extract_ops(updatable, removal=False)
        violations += found
    if removable is not None:
        remove_ops, found = extract_ops(removable, removal=True)
        violations += found
    ordered = (remove_ops + set_ops if behaviours.apply_order == "removals_first"
               else set_ops + remove_ops)
    for op in ordered:
        violations += _apply(doc, op, ctx, behaviours)
    if not violations and not any(s.get("Instances") for s in _series(doc).values()):
        violations.append("an image set must keep at least one instance")
    if ctx.force_refused:
        violations = [v.replace("requires force", "requires force, which applies to "
                                                   "non-primary image sets only")
                      for v in violations]
    return doc, violations


def _series(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.setdefault("Study", {}).setdefault("Series", {})


def _target(doc: dict[str, Any], op: Op) -> tuple[dict | None, dict | None, str | None]:
    """(DICOM map, owning node, problem) for the level an op addresses."""
    if op.level == service_facts.PATIENT:
        node = doc.setdefault("Patient", {})
        return node.setdefault("DICOM", {}), node, None
    if op.level == service_facts.STUDY:
        node = doc.setdefault("Study", {})
        return node.setdefault("DICOM", {}), node, None
    series = _series(doc).get(op.series or "")
    if series is None:
        return None, None, ("Study.Series.*: the series does not exist in this image set "
                            "(updates cannot add series)")
    if op.level == service_facts.SERIES:
        return series.setdefault("DICOM", {}), series, None
    instance = series.get("Instances", {}).get(op.instance or "")
    if instance is None:
        return None, None, ("Study.Series.*.Instances.*: the instance does not exist in this "
                            "image set (updates cannot add instances)")
    return instance.setdefault("DICOM", {}), instance, None


def _apply(doc: dict[str, Any], op: Op, ctx: UpdateContext, b: Behaviours) -> list[str]:
    if op.kind == "remove_series":
        return _remove_series(doc, op)
    if op.kind == "remove_instance":
        return _remove_instance(doc, op, ctx, b)
    problems = _check_attribute(op, ctx, b)
    dicom, node, missing = _target(doc, op)
    if missing:
        return [missing]
    assert dicom is not None and node is not None
    present = op.key in dicom
    private = is_private_key(op.key)
    if private and op.kind == "set" and not present:
        known = {k.upper() for k in node.get("DICOMVRs", {})}
        if op.key.upper() not in known and op.key.upper() not in op.vrs:
            problems.append(f"{op.path}: adding a private attribute needs its VR in DICOMVRs")
    if op.kind == "remove":
        if not present or dicom[op.key] != op.value:
            if b.removal_mismatch == "ignore":
                return problems
            what = "is not present" if not present else "does not match the current value"
            problems.append(f"{op.path}: the value to remove {what}")
    if problems:
        return problems
    if op.kind == "remove":
        del dicom[op.key]
        if private:
            node.get("DICOMVRs", {}).pop(op.key, None)
        return []
    dicom[op.key] = copy.deepcopy(op.value)
    if private:
        vr = op.vrs.get(op.key.upper())
        if vr:
            node.setdefault("DICOMVRs", {})[op.key] = vr
    return _rekey(doc, op)


def _check_attribute(op: Op, ctx: UpdateContext, b: Behaviours) -> list[str]:
    """The constraints on one attribute change, independent of the document's content."""
    key, value, path = op.key, op.value, op.path
    if key in service_facts.GENERATED_ATTRIBUTES:
        return [f"{path}: {key} is generated by the service and cannot be changed"]
    problems: list[str] = []
    if is_private_key(key):
        if op.level != service_facts.INSTANCE:
            return [f"{path}: private attributes are allowed at the instance level only"]
        if not ctx.force:
            problems.append(f"{path}: changing a private attribute requires force")
        return problems
    if PRIVATE_KEY.fullmatch(key):
        return [f"{path}: standard attributes are keyed by DICOM keyword, not by tag"]
    if key not in keyword_dict:
        if not ctx.force:
            problems.append(f"{path}: {key} is not a DICOM keyword: requires force")
        return problems
    level = service_facts.level_for(key)
    if level != op.level:
        return [f"{path}: {key} belongs to the {level} level"]
    if key in UIDS and op.kind == "remove":
        return [f"{path}: {key} cannot be removed (remove the series or instance instead)"]
    if key in service_facts.FORCE_REQUIRED_ATTRIBUTES:
        if not ctx.force:
            problems.append(f"{path}: changing {key} requires force")
        elif key in UIDS and ctx.is_primary and b.primary_uid_force == "refuse":
            problems.append(f"{path}: {key} cannot be changed on a primary image set, "
                            f"even with force")
    if is_sequence(value) or (vr_of(key) == "SQ" and value is not None):
        if not ctx.force:
            problems.append(f"{path}: changing a sequence attribute requires force")
    elif is_multi_valued(value):
        if not ctx.force:
            problems.append(f"{path}: changing a multi-valued attribute requires force")
    elif op.kind == "set" and vr_problem(vr_of(key), value) and not ctx.force:
        problems.append(f"{path}: the value does not fit the VR {vr_of(key)} of {key}: "
                        f"requires force")
    restricted = RESTRICTED.get(b.primary_restricted_levels, ())
    if ctx.is_primary and op.level in restricted and not (
            ctx.include_study and b.primary_restriction_include_study == "allowed"
            and op.level in (service_facts.PATIENT, service_facts.STUDY)):
        problems.append(f"{path}: {op.level}-level attributes cannot be updated on a primary "
                        f"image set")
    if b.length_limits == "enforce" and op.kind == "set" and exceeds_length_limit(key, value):
        problems.append(f"{path}: the value exceeds the length limit of {key}")
    return problems


def _rekey(doc: dict[str, Any], op: Op) -> list[str]:
    """After a forced UID change, move the series / instance to its new map key."""
    if op.key == "SeriesInstanceUID" and op.level == service_facts.SERIES and op.value != op.series:
        series = _series(doc)
        if not isinstance(op.value, str) or op.value in series:
            return [f"{op.path}: the new SeriesInstanceUID is invalid or already used"]
        series[op.value] = series.pop(op.series)
    if op.key == "SOPInstanceUID" and op.level == service_facts.INSTANCE and op.value != op.instance:
        instances = _series(doc)[op.series]["Instances"]
        taken = any(op.value in s.get("Instances", {}) for s in _series(doc).values())
        if not isinstance(op.value, str) or taken:
            return [f"{op.path}: the new SOPInstanceUID is invalid or already used"]
        instances[op.value] = instances.pop(op.instance)
    return []


def _remove_series(doc: dict[str, Any], op: Op) -> list[str]:
    series = _series(doc)
    if op.series not in series:
        return ["Study.Series.*: the series to remove does not exist in this image set"]
    del series[op.series]
    return []


def _remove_instance(doc: dict[str, Any], op: Op, ctx: UpdateContext,
                     b: Behaviours) -> list[str]:
    series = _series(doc).get(op.series or "")
    if series is None or op.instance not in series.get("Instances", {}):
        return ["Study.Series.*.Instances.*: the instance to remove does not exist in this "
                "image set"]
    if b.remove_instance_needs_force == "true" and not ctx.force:
        return ["Study.Series.*.Instances.*: removing an instance requires force"]
    del series["Instances"][op.instance]
    if not series["Instances"]:
        del _series(doc)[op.series]
    return []


def scope_for_peer(doc: dict[str, Any] | None, peer: dict[str, Any],
                   scope: str) -> dict[str, Any] | None:
    """The part of an update document that includeStudyImageSets applies to another image set."""
    if doc is None:
        return None
    out = {k: v for k, v in doc.items() if k != "Study"}
    study = doc.get("Study")
    if study is None:
        return out
    out["Study"] = {k: v for k, v in study.items() if k != "Series"}
    if scope == "all_levels" and "Series" in study:
        mine = _series(copy.deepcopy(peer))
        out["Study"]["Series"] = {uid: s for uid, s in study["Series"].items() if uid in mine}
    return out
