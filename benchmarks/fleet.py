"""Synthetic HealthImaging fleets for the benchmarks, built from the bundled real DICOM.

Templates: the metadata documents the emulator's own DICOM seeding makes from
``examples/dicom/`` (CT, MR, SC, RT plan ... exactly as HealthImaging's import normalises
them). Every generated image set is a copy of one template with new, deterministic identities:

* Patient: ``PatientName`` / ``PatientID`` per synthetic patient;
* Study: a new ``StudyInstanceUID`` (``2.25.<int>``, derived with SHA-256 from the fleet seed),
  ``AccessionNumber``;
* Series / instances: new ``SeriesInstanceUID`` / ``SOPInstanceUID`` (and
  ``MediaStorageSOPInstanceUID``), frame ids re-derived;
* an explicit ``ImageSetID`` (32 hex), so that several primary image sets may share one study
  (the emulator keeps a valid ``ImageSetID`` of a JSON seed).

Studies have 1 image set, or every ``multi_every``-th study 3 primary image sets (one series
each). :func:`large_document` builds one image set with N instances (default 5,000).

:func:`write_fleet` writes the seed documents (one JSON file each) to a directory and returns a
:class:`Fleet` describing them; :func:`write_specs` writes spec files (100 YAML documents per
file) that change a chosen fraction of the fleet: explicit ``imageSetId`` specs for single
image-set studies (PatientName, StudyDescription: every seeded image set is primary), one
``DICOMStudyInstanceUID`` selector spec per multi-image-set study (PatientName,
StudyDescription). Unchanged specs declare the live values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
DICOM_DIR = ROOT / "examples" / "dicom"


def uid(*parts: Any) -> str:
    """A deterministic DICOM UID under the 2.25 (UUID-derived) root."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


def image_set_id(*parts: Any) -> str:
    return hashlib.sha256(("imageset:" + ":".join(map(str, parts))).encode()).hexdigest()[:32]


_TEMPLATES: list[dict[str, Any]] | None = None


def templates() -> list[dict[str, Any]]:
    """The bundled DICOM studies as HealthImaging metadata documents (the emulator's seeding)."""
    global _TEMPLATES
    if _TEMPLATES is None:
        from reconciler.emulator.dicom_seed import load_seeds

        docs = [s.document for s in load_seeds([str(DICOM_DIR)])]
        # Templates with a single series (the series is what we copy per image set).
        _TEMPLATES = [d for d in docs if len(d["Study"]["Series"]) == 1]
    return _TEMPLATES


def _one_series(template: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    series = next(iter(template["Study"]["Series"].values()))
    return series["DICOM"], list(series["Instances"].values())


def _instance(src: dict[str, Any], sop: str) -> dict[str, Any]:
    inst = copy.deepcopy(src)
    dicom = inst["DICOM"]
    dicom["SOPInstanceUID"] = sop
    if "MediaStorageSOPInstanceUID" in dicom:
        dicom["MediaStorageSOPInstanceUID"] = sop
    for i, frame in enumerate(inst.get("ImageFrames") or []):
        frame["ID"] = hashlib.md5(f"{sop}:{i}".encode()).hexdigest()
    return inst


def make_document(template: dict[str, Any], *, seed: str, patient: int, study: int,
                  part: int, instances: int | None = None, series_count: int = 1,
                  isid: str) -> dict[str, Any]:
    """One image set: the template's patient/study/series with new identities."""
    series_dicom, template_instances = _one_series(template)
    study_uid = uid(seed, "study", study)
    doc: dict[str, Any] = {
        "SchemaVersion": "1.1", "DatastoreID": None, "ImageSetID": isid,
        "Patient": {"DICOM": copy.deepcopy(template["Patient"]["DICOM"])},
        "Study": {"DICOM": copy.deepcopy(template["Study"]["DICOM"]), "Series": {}},
    }
    doc["Patient"]["DICOM"]["PatientName"] = f"FLEET^PATIENT{patient:05d}"
    doc["Patient"]["DICOM"]["PatientID"] = f"FLEET{patient:05d}"
    doc["Study"]["DICOM"]["StudyInstanceUID"] = study_uid
    doc["Study"]["DICOM"]["AccessionNumber"] = f"ACC{study:07d}"
    doc["Study"]["DICOM"]["StudyDescription"] = "FLEET STUDY"
    total = instances if instances is not None else len(template_instances)
    per_series = -(-total // series_count)
    n = 0
    for s in range(series_count):
        series_uid = uid(seed, "series", study, part, s)
        sdicom = copy.deepcopy(series_dicom)
        sdicom["SeriesInstanceUID"] = series_uid
        sdicom["SeriesNumber"] = str(part * 100 + s + 1)
        sdicom["SeriesDescription"] = f"FLEET SERIES {s + 1}"
        insts: dict[str, Any] = {}
        for k in range(min(per_series, total - n)):
            sop = uid(seed, "sop", study, part, s, k)
            insts[sop] = _instance(template_instances[(n + k) % len(template_instances)], sop)
        n += len(insts)
        doc["Study"]["Series"][series_uid] = {"DICOM": sdicom, "Instances": insts}
    return doc


@dataclass
class ImageSetInfo:
    image_set_id: str
    study: int
    study_uid: str
    patient_name: str
    series_uid: str             # the first series
    multi: bool                 # one of several primary image sets of its study


@dataclass
class Fleet:
    directory: Path
    image_sets: list[ImageSetInfo] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [i.image_set_id for i in self.image_sets]

    def studies(self) -> dict[int, list[ImageSetInfo]]:
        out: dict[int, list[ImageSetInfo]] = {}
        for info in self.image_sets:
            out.setdefault(info.study, []).append(info)
        return out


def iter_fleet(n: int, seed: str = "fleet", multi_every: int = 5,
               per_multi: int = 3) -> Iterator[tuple[ImageSetInfo, dict[str, Any]]]:
    """``n`` image sets: studies of 1 image set, every ``multi_every``-th of ``per_multi``."""
    temps = templates()
    made = study = 0
    while made < n:
        parts = per_multi if (multi_every and study % multi_every == multi_every - 1) else 1
        parts = min(parts, n - made)
        patient = study // 2                       # two studies per patient
        for part in range(parts):
            isid = image_set_id(seed, study, part)
            doc = make_document(temps[study % len(temps)], seed=seed, patient=patient,
                                study=study, part=part, isid=isid)
            first_series = next(iter(doc["Study"]["Series"]))
            yield ImageSetInfo(isid, study, doc["Study"]["DICOM"]["StudyInstanceUID"],
                               doc["Patient"]["DICOM"]["PatientName"], first_series,
                               parts > 1), doc
            made += 1
        study += 1


def write_fleet(directory: str | os.PathLike[str], n: int, seed: str = "fleet",
                multi_every: int = 5) -> Fleet:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(directory)
    for i, (info, doc) in enumerate(iter_fleet(n, seed, multi_every)):
        (directory / f"{i:06d}.json").write_text(json.dumps(doc, separators=(",", ":")))
        fleet.image_sets.append(info)
    return fleet


def large_document(instances: int = 5000, series: int = 5, seed: str = "large") -> tuple[str, dict[str, Any]]:
    """One image set with ``instances`` instances (CT template) in ``series`` series."""
    ct = next(t for t in templates() if t["Study"]["DICOM"].get("StudyID") is not None
              and "CT" in json.dumps(next(iter(t["Study"]["Series"].values()))["DICOM"].get("Modality")))
    isid = image_set_id(seed, 0, 0)
    return isid, make_document(ct, seed=seed, patient=99999, study=0, part=0,
                               instances=instances, series_count=series, isid=isid)


# ------------------------------------------------------------------------------ specs
def _spec(name: str, target: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
            "metadata": {"name": name}, "target": target, "attributes": attributes}


@dataclass
class SpecSet:
    directory: Path
    targeted: int = 0          # image sets the specs target
    changed: int = 0           # image sets whose live metadata differs from the specs
    changed_attributes: int = 0
    desired: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → desired attributes
    specs: int = 0


def write_specs(directory: str | os.PathLike[str], fleet: Fleet, datastore_id: str, *,
                changed_fraction: float = 0.8, per_file: int = 100) -> SpecSet:
    """Specs over the whole fleet; ``changed_fraction`` of the studies get new values."""
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = SpecSet(directory)
    docs: list[dict[str, Any]] = []
    studies = fleet.studies()
    cut = int(round(len(studies) * changed_fraction))
    for rank, (study, sets) in enumerate(sorted(studies.items())):
        change = rank < cut
        first = sets[0]
        patient_name = f"{first.patient_name}^^^CORRECTED" if change else first.patient_name
        desc = f"BENCH STUDY {study}" if change else "FLEET STUDY"
        # Patient and Study attributes only: every seeded image set is primary, and the
        # emulator's default reading (like the guide's wording) refuses Series-level updates
        # on primary image sets (docs/primary-image-sets.md).
        attrs: dict[str, Any] = {"Patient": {"PatientName": patient_name},
                                 "Study": {"StudyDescription": desc}}
        if len(sets) == 1:
            docs.append(_spec(f"s{study:06d}", {"imageSetId": first.image_set_id}, attrs))
        else:
            docs.append(_spec(f"s{study:06d}", {"selector": {"DICOMStudyInstanceUID": first.study_uid}},
                              attrs))
        for info in sets:
            out.targeted += 1
            out.desired[info.image_set_id] = attrs
            if change:
                out.changed += 1
                out.changed_attributes += 2
    for start in range(0, len(docs), per_file):
        chunk = docs[start:start + per_file]
        (directory / f"specs-{start // per_file:04d}.yaml").write_text(
            yaml.safe_dump_all(chunk, sort_keys=False, width=1000))
    out.specs = len(docs)
    return out


def write_config(path: str | os.PathLike[str], datastore_id: str, specs_dir: str | os.PathLike[str],
                 state_path: str | os.PathLike[str], quotas: dict[str, float]) -> Path:
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump({
        "datastoreId": datastore_id, "specs": [str(specs_dir)], "redact": "never",
        "state": {"backend": "local", "path": str(state_path)},
        "quotas": quotas}, sort_keys=False))
    return path


def write_fleet_jsonl(path: str | os.PathLike[str], n: int, seed: str = "fleet",
                      multi_every: int = 5) -> Fleet:
    """The same fleet as :func:`write_fleet`, as one JSON-lines file (one document a line),
    which ``reconciler emulator serve --seed FILE.jsonl`` reads in one go: at 100,000 image
    sets, 100,000 small files cost more to write and read than the documents themselves."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(path.parent)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with path.open("w", encoding="utf-8") as out:
        for info, doc in iter_fleet(n, seed, multi_every):
            out.write(dumps(doc))
            out.write("\n")
            fleet.image_sets.append(info)
    return fleet
