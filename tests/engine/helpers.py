"""Small builders for engine tests: specs from plain dicts, and an independent applier.

The applier is deliberately written from the service's documented semantics
(docs/service-notes.md#update-payloads: removals, then updates; an empty object removes a whole
series or instance), not from reconciler's own payload code, so that property tests check the
engine against them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from reconciler.dicom.dictionary import vr_of_keyword
from reconciler.spec.types import (
    Attribute, DesiredAttributes, InstanceSpec, Position, SeriesSpec, Spec, Target)

POS = Position("test.yaml", 1, 1)


def attrs(mapping: dict[str, Any]) -> dict[str, Attribute]:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and "vr" in value:  # private tag
            out[key] = Attribute(key, value["value"], value["vr"], POS, private=True)
        else:
            out[key] = Attribute(key, value, vr_of_keyword(key), POS)
    return out


def desired(patient=None, study=None, series=None) -> DesiredAttributes:
    result = DesiredAttributes(patient=attrs(patient or {}), study=attrs(study or {}))
    for suid, body in (series or {}).items():
        if body is None:
            result.series[suid] = SeriesSpec(suid, POS, absent=True)
            continue
        body = dict(body)
        instances = body.pop("Instances", {})
        s = SeriesSpec(suid, POS, attributes=attrs(body))
        for sop, ibody in instances.items():
            s.instances[sop] = (InstanceSpec(sop, POS, absent=True) if ibody is None
                                else InstanceSpec(sop, POS, attributes=attrs(ibody)))
        result.series[suid] = s
    return result


def spec(name="s1", image_set_id="a" * 32, datastore_id="d" * 32, force=False, **levels) -> Spec:
    return Spec(name=name, target=Target(datastore_id=datastore_id, image_set_id=image_set_id),
                attributes=desired(**levels), position=POS, digest="0" * 64, force=force)


def _level_nodes(doc: dict[str, Any], payload: dict[str, Any]):
    """Yield (payload node, metadata node) pairs down the hierarchy."""
    if "Patient" in payload:
        yield payload["Patient"], doc.setdefault("Patient", {})
    study = payload.get("Study")
    if study is None:
        return
    live_study = doc.setdefault("Study", {})
    yield {k: v for k, v in study.items() if k != "Series"}, live_study
    for suid, series in study.get("Series", {}).items():
        if series == {}:
            continue  # a whole-series removal, handled by the caller
        live_series = live_study["Series"][suid]
        yield {k: v for k, v in series.items() if k != "Instances"}, live_series
        for sop, inst in series.get("Instances", {}).items():
            if inst != {}:
                yield inst, live_series["Instances"][sop]


def apply_request(metadata: dict[str, Any], updatable: str | None,
                  removable: str | None) -> dict[str, Any]:
    doc = copy.deepcopy(metadata)
    if removable:
        payload = json.loads(removable)
        study = payload.get("Study", {})
        for suid, series in list(study.get("Series", {}).items()):
            if series == {}:
                del doc["Study"]["Series"][suid]
                continue
            for sop, inst in list(series.get("Instances", {}).items()):
                if inst == {}:
                    del doc["Study"]["Series"][suid]["Instances"][sop]
        for node, live in _level_nodes(doc, payload):
            for key, value in node.get("DICOM", {}).items():
                assert live["DICOM"][key] == value, f"removal of {key} does not carry its value"
                del live["DICOM"][key]
    if updatable:
        payload = json.loads(updatable)
        for node, live in _level_nodes(doc, payload):
            live.setdefault("DICOM", {}).update(node.get("DICOM", {}))
            if node.get("DICOMVRs"):
                live.setdefault("DICOMVRs", {}).update(node["DICOMVRs"])
    return doc
