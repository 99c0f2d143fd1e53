"""import: write a starting spec from live metadata, one that ``plan`` reports as no change.

A team adopting reconciler starts from what is live. For each image set, the attributes at
the chosen levels are written as a spec (format v1) with the image set's id as target. What a
spec may only declare with ``force: true`` (UIDs, StudyID, private elements, sequences,
multi-valued values), generated attributes, bulk binary values and values that do not pass
the validator (real data is not always valid DICOM) are left out, and a comment lists them by
keyword, never by value. The document is checked by the real spec loader before it is printed.

With ``--out-dir`` the specs land in the layout of a metadata repository (examples/gitops):
one file per study, ``study-<hash>.yaml``, named by a short hash of the StudyInstanceUID so
that neither file names nor spec names carry patient data.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..core import errors
from ..data import service_facts
from ..dicom import dictionary, valuerep
from ..healthimaging.api import HealthImaging
from ..spec.config import Config
from .reading import study_key

LEVELS = ("Patient", "Study", "Series", "Instance")
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}


def _importable(key: str, value: Any, level: str) -> str | None:
    """Why ``key`` is left out of an imported spec, or None when it can be declared."""
    if dictionary.is_tag(key):
        return "private"
    if key in service_facts.GENERATED_ATTRIBUTES:
        return "generated"
    if key in service_facts.FORCE_REQUIRED_ATTRIBUTES:
        return "needs force"
    if not dictionary.keyword_exists(key):
        return "unknown keyword"
    if service_facts.level_for(key) != level:
        return "other level"
    vr = dictionary.dictionary_vr(key)
    if vr == "SQ" or vr in _BULK_VRS:
        return "needs force" if vr == "SQ" else "binary"
    if isinstance(value, list) and len(value) > 1:
        return "needs force"
    if dictionary.is_retired(key):
        return "retired"
    single = value[0] if isinstance(value, list) and value else value
    raw = "" if single is None or single == [] else single
    _, problems = valuerep.convert(vr, raw, vm=dictionary.vm_for(key), keyword=key)
    return "not valid for its VR" if problems else None


def _section(dicom_map: dict[str, Any], level: str, left_out: dict[str, set[str]]) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for key in sorted(dicom_map):
        value = dicom_map[key]
        why = _importable(key, value, level)
        if why:
            left_out.setdefault(why, set()).add(key)
            continue
        if isinstance(value, list):
            value = value[0] if value else None
        # HealthImaging's null is a present, empty element: the spec says "" for it.
        section[key] = "" if value is None else value
    return section


def spec_document(metadata: dict[str, Any], datastore_id: str, image_set_id: str,
                  version_id: str, levels: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, set[str]]]:
    left_out: dict[str, set[str]] = {}
    attributes: dict[str, Any] = {}
    if "Patient" in levels:
        attributes["Patient"] = _section(metadata.get("Patient", {}).get("DICOM", {}), "Patient", left_out)
    study = metadata.get("Study", {})
    if "Study" in levels:
        attributes["Study"] = _section(study.get("DICOM", {}), "Study", left_out)
    if "Series" in levels or "Instance" in levels:
        series_out: dict[str, Any] = {}
        for suid, series in sorted((study.get("Series") or {}).items()):
            body: dict[str, Any] = {}
            if "Series" in levels:
                body.update(_section(series.get("DICOM", {}), "Series", left_out))
            if "Instance" in levels:
                body["Instances"] = {
                    sop: _section(inst.get("DICOM", {}), "Instance", left_out)
                    for sop, inst in sorted((series.get("Instances") or {}).items())}
            series_out[suid] = body
        attributes["Series"] = series_out
    doc = {"apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
           "metadata": {"name": f"imageset-{image_set_id[:12]}"},
           "target": {"datastoreId": datastore_id, "imageSetId": image_set_id},
           "attributes": {k: v for k, v in attributes.items() if v}}
    return doc, left_out


def render(doc: dict[str, Any], left_out: dict[str, set[str]], version_id: str) -> str:
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    head = [f"# Imported by reconciler import from image set {doc['target']['imageSetId']} "
            f"version {version_id} on {when}."]
    for why in sorted(left_out):
        keys = sorted(left_out[why])
        listed = (f"{len(keys)} private elements (they need force: true)" if why == "private"
                  else ", ".join(keys))
        head.append(f"# Left out ({why}): {listed}")
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False,
                          width=100)
    return "\n".join(head) + "\n" + body


def check(text: str, config: Config) -> None:
    """Run the real loader on the generated spec: an import that does not validate is a bug."""
    from ..spec.loader import load_specs

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imported.yaml"
        path.write_text(text, encoding="utf-8")
        load_specs([str(path)], config)


def _read(hi: HealthImaging, datastore_id: str, image_set_ids: list[str],
          levels: tuple[str, ...]) -> list[tuple[str, dict[str, Any], dict[str, set[str]], str]]:
    """(study uid, spec document, left out, version) per image set."""
    unknown = [lvl for lvl in levels if lvl not in LEVELS]
    if unknown:
        raise errors.UsageError(f"unknown level(s) {', '.join(unknown)}; choose from "
                                f"{', '.join(LEVELS)}")
    found = []
    for image_set_id in image_set_ids:
        image_set = hi.get_image_set(datastore_id, image_set_id)
        metadata = hi.get_metadata(datastore_id, image_set_id, image_set.version_id)
        doc, left_out = spec_document(metadata, datastore_id, image_set_id,
                                      image_set.version_id, levels)
        study_uid = str(metadata.get("Study", {}).get("DICOM", {}).get("StudyInstanceUID") or "")
        found.append((study_uid, doc, left_out, image_set.version_id))
    return found


def import_specs(hi: HealthImaging, config: Config, datastore_id: str, image_set_ids: list[str],
                 levels: tuple[str, ...] = ("Patient", "Study")) -> str:
    """The YAML of one spec document per image set, validated."""
    documents = [render(doc, left_out, version)
                 for _, doc, left_out, version in _read(hi, datastore_id, image_set_ids, levels)]
    text = "---\n".join(documents)
    check(text, config)
    return text


def import_to_dir(hi: HealthImaging, config: Config, datastore_id: str, image_set_ids: list[str],
                  levels: tuple[str, ...], out_dir: str | Path) -> list[tuple[Path, int]]:
    """One file per study in ``out_dir`` (``study-<hash>.yaml``), one spec per image set of
    the study (named ``study-<hash>``, or ``study-<hash>-<image set id prefix>`` when the
    study has several). Existing files are never overwritten. Returns (file, image sets)."""
    by_study: dict[str, list] = {}
    for study_uid, doc, left_out, version in _read(hi, datastore_id, image_set_ids, levels):
        by_study.setdefault(study_key(study_uid or doc["target"]["imageSetId"]), []).append(
            (doc, left_out, version))
    target = Path(out_dir)
    files = {key: target / f"{key}.yaml" for key in by_study}
    existing = sorted(str(f) for f in files.values() if f.exists())
    if existing:
        raise errors.UsageError(f"not overwriting {', '.join(existing)}: move them away or "
                                f"choose another --out-dir")
    texts = {}
    for key, items in sorted(by_study.items()):
        parts = []
        for doc, left_out, version in items:
            doc["metadata"]["name"] = (key if len(items) == 1
                                       else f"{key}-{doc['target']['imageSetId'][:8]}")
            parts.append(render(doc, left_out, version))
        texts[key] = "---\n".join(parts)
    check("---\n".join(texts.values()), config)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for key, text in texts.items():
        files[key].write_text(text, encoding="utf-8")
        written.append((files[key], len(by_study[key])))
    return written
