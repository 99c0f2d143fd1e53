"""Seed data: real DICOM files (read with pydicom) or metadata JSON → metadata documents.

A seeded image set stands for what a HealthImaging import would have produced, so the document
follows the shapes of the real AWS sample (tests/data/aws-sample-metadata.json):

* one image set per StudyInstanceUID; elements split into ``Patient`` / ``Study`` /
  ``Series.<uid>`` / ``Instances.<uid>`` with the normalisation table of ``reconciler.data.service_facts``
  (Patient/Study/Series from the first instance of the study / series; everything else stays
  on the instance, file-meta elements included, group lengths dropped);
* values in the service's JSON forms: strings as pydicom reads them (DS/IS keep their original
  text, e.g. ``"6.83760684E-01"``), JSON numbers for binary numeric VRs, an array whenever the
  dictionary VM is not ``1`` (``"WindowWidth": ["2.8E+03"]``) or the element has several
  values, ``null`` for empty elements, sequences as arrays of objects, base64 for bulk binary
  VRs, ``PixelData: null``;
* private elements keyed by their 8-hex-digit tag with their VRs in the instance ``DICOMVRs``;
* ``ImageFrames`` with an ``ID``, a checksum per resolution level, min/max pixel values and the
  frame size (computed from native pixel data; for compressed data the checksum covers the
  stored frame and min/max fall back to the pixel-value range of ``BitsStored``).

Parsing is cached per file (path, size, mtime), so tests that start many emulators seeded from
the same files read them once.
"""

from __future__ import annotations

import array
import base64
import hashlib
import io
import json
import math
import sys
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import pydicom
from pydicom.datadict import dictionary_VM
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from reconciler.data import service_facts

NUMBER_VRS = frozenset("US SS UL SL UV SV FL FD".split())
BINARY_VRS = frozenset("OB OW OD OF OL OV UN".split())
PIXEL_KEYWORDS = frozenset({"PixelData", "FloatPixelData", "DoublePixelData"})
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.202"
LOSSY_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                            "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
                            "1.2.840.10008.1.2.4.203"})


JSON_LINES = (".jsonl", ".ndjson")


class SeedError(ValueError):
    """A seed path that holds neither DICOM nor a metadata document."""


@dataclass(frozen=True)
class SeedDocument:
    """One image set's metadata before ids are assigned (``DatastoreID``/``ImageSetID`` None)."""

    study_uid: str
    document: dict[str, Any]
    source: str                      # "dicom" | "json"
    image_set_id: str | None = None  # the id a JSON document carried, when valid
    text: str | None = None          # the JSON text it was parsed from (seeding stores the
                                     # compact form as it is: core.seed_document)


# ------------------------------------------------------------------------------ values
def _key(elem: pydicom.DataElement) -> str:
    if elem.tag.is_private or not elem.keyword:
        return f"{int(elem.tag):08X}"
    return elem.keyword


def _scalar(vr: str, value: Any) -> Any:
    if value is None:
        return None
    if vr in NUMBER_VRS:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if vr == "AT":
        return f"{int(value):08X}"
    if isinstance(value, bytes):
        return value.decode("latin-1")
    text = str(value)
    return text if text != "" else None


def element_value(elem: pydicom.DataElement) -> Any:
    """The service's JSON form of one element's value."""
    vr = elem.VR
    if elem.keyword in PIXEL_KEYWORDS:
        return None
    if vr == "SQ":
        items = [dataset_dicom(item)[0] for item in elem.value]
        return items or None
    if vr in BINARY_VRS:
        raw = elem.value
        if not raw:
            return None
        if not isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw)
        return base64.b64encode(raw).decode("ascii")
    value = elem.value
    if value is None or value == "" or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    multi = isinstance(value, (list, tuple, pydicom.multival.MultiValue))
    values = [_scalar(vr, v) for v in value] if multi else [_scalar(vr, value)]
    if elem.tag.is_private or not elem.keyword:
        many = len(values) > 1
    else:
        many = dictionary_VM(elem.tag) != "1" or len(values) > 1
    return values if many else values[0]


def dataset_dicom(ds: Dataset) -> tuple[dict[str, Any], dict[str, str]]:
    """(``DICOM`` map, ``DICOMVRs`` for private / unknown tags) of a dataset or sequence item."""
    dicom: dict[str, Any] = {}
    vrs: dict[str, str] = {}
    for elem in ds:
        if elem.tag.element == 0:          # group lengths are not kept
            continue
        key = _key(elem)
        dicom[key] = element_value(elem)
        if key != elem.keyword:
            vrs[key] = elem.VR
    return dicom, vrs


# ---------------------------------------------------------------------- image frames
def _levels(width: int, height: int) -> list[tuple[int, int]]:
    levels = [(width, height)]
    while min(levels[-1]) > 128:
        w, h = levels[-1]
        levels.append(((w + 1) // 2, (h + 1) // 2))
    return list(reversed(levels))


def _native_min_max(frame: bytes, bits: int, signed: bool, big_endian: bool):
    code = {8: "b", 16: "h", 32: "i"}.get(bits)
    if code is None or len(frame) % (bits // 8):
        return None
    values = array.array(code if signed else code.upper(), frame)
    if big_endian != (sys.byteorder == "big"):
        values.byteswap()
    return (min(values), max(values)) if values else None


def image_frames(ds: Dataset, sop_uid: str) -> list[dict[str, Any]]:
    if "PixelData" not in ds:
        return []
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    stored = int(ds.get("BitsStored", bits) or bits)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    n = int(ds.get("NumberOfFrames", 1) or 1)
    size = rows * cols * spp * max(1, bits // 8)
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    if syntax.is_encapsulated:
        stored_frames = list(generate_frames(ds.PixelData, number_of_frames=n))
    else:
        data = ds.PixelData
        stored_frames = [data[i * size:(i + 1) * size] for i in range(n)]
    lo, hi = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    frames = []
    for index, frame in enumerate(stored_frames):
        found = None if syntax.is_encapsulated else _native_min_max(
            frame, bits, signed, not syntax.is_little_endian)
        if found is None:
            found = (ds.get("SmallestImagePixelValue", lo), ds.get("LargestImagePixelValue", hi))
        crc = zlib.crc32(frame)
        checksums = [{"Width": w, "Height": h,
                      "Checksum": crc if (w, h) == (cols, rows)
                      else zlib.crc32(f"{w}x{h}".encode(), crc)}
                     for w, h in _levels(cols, rows)]
        frames.append({
            "ID": hashlib.md5(f"{sop_uid}/{index}".encode()).hexdigest(),
            "PixelDataChecksumFromBaseToFullResolution": checksums,
            "MinPixelValue": int(found[0]), "MaxPixelValue": int(found[1]),
            "FrameSizeInBytes": size,
        })
    return frames


# ------------------------------------------------------------------------ documents
@dataclass(frozen=True)
class _Instance:
    study_uid: str
    series_uid: str
    sop_uid: str
    levels: dict[str, dict[str, Any]]   # Patient/Study/Series/Instance → DICOM map
    vrs: dict[str, str]
    frames: tuple
    stored_syntax: str


@lru_cache(maxsize=512)
def _read_instance(path: str, size: int, mtime_ns: int) -> _Instance | None:
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError):
        return None
    if "StudyInstanceUID" not in ds or "SOPInstanceUID" not in ds:
        return None
    return _instance(ds)


def parse_p10(data: bytes) -> tuple[_Instance | None, str | None]:
    """One DICOM P10 object (an import job's input file) → (instance, None) or (None, why).

    The reason names what is missing, never a value; an import records it in failure.ndjson.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, OSError):
        return None, "The file is not a DICOM P10 object"
    except Exception:  # noqa: BLE001 - pydicom raises a variety on garbage input
        return None, "The file is not a DICOM P10 object"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in ds:
            return None, f"DICOM attribute {keyword} does not exist"
    try:
        return _instance(ds), None
    except Exception:  # noqa: BLE001 - an unreadable element or pixel data
        return None, "The DICOM object could not be read"


def _instance(ds: Dataset) -> _Instance:
    dicom, vrs = dataset_dicom(ds.file_meta) if ds.file_meta else ({}, {})
    body, body_vrs = dataset_dicom(ds)
    dicom.update(body)
    vrs.update(body_vrs)
    levels: dict[str, dict[str, Any]] = {lvl: {} for lvl in service_facts.LEVELS}
    table = service_facts.level_of_keyword()
    for key, value in dicom.items():
        levels[table.get(key, service_facts.INSTANCE)][key] = value
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    stored = syntax if syntax in LOSSY_SYNTAXES else HTJ2K_LOSSLESS
    sop = str(ds.SOPInstanceUID)
    return _Instance(str(ds.StudyInstanceUID), str(ds.get("SeriesInstanceUID", "")), sop,
                     levels, vrs, tuple(json.dumps(f) for f in image_frames(ds, sop)), stored)


def _files(paths: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*")
                          if p.is_file() and not any(part.startswith(".") for part in
                                                     p.relative_to(path).parts))
        elif path.is_file():
            out.append(path)
        else:
            raise SeedError(f"seed path not found: {raw}")
    return out


def assemble(instances: list[_Instance], storage_keys: bool) -> dict[str, Any]:
    """One image set's document from instances of one study (the first one's
    Patient/Study values, each series' first instance's Series values)."""
    return _assemble(instances, storage_keys)


def _assemble(instances: list[_Instance], storage_keys: bool) -> dict[str, Any]:
    first = instances[0]
    doc: dict[str, Any] = {
        "SchemaVersion": "1.1", "DatastoreID": None, "ImageSetID": None,
        "Patient": {"DICOM": dict(first.levels[service_facts.PATIENT])},
        "Study": {"DICOM": dict(first.levels[service_facts.STUDY]), "Series": {}},
    }
    for inst in instances:
        series = doc["Study"]["Series"].setdefault(
            inst.series_uid, {"DICOM": dict(inst.levels[service_facts.SERIES]), "Instances": {}})
        instance: dict[str, Any] = {"DICOM": dict(inst.levels[service_facts.INSTANCE]),
                                    "DICOMVRs": dict(inst.vrs)}
        if storage_keys:
            instance["StoredTransferSyntaxUID"] = inst.stored_syntax
            instance["ChecksumType"] = "DECOMPRESSED"
        instance["ImageFrames"] = [json.loads(f) for f in inst.frames]
        series["Instances"][inst.sop_uid] = instance
    return doc


def load_seeds(paths: Iterable[str], storage_keys: bool = True) -> list[SeedDocument]:
    """Every image set the seed paths describe: DICOM grouped by study, JSON documents as is."""
    return list(iter_seeds(paths, storage_keys))


def iter_seeds(paths: Iterable[str], storage_keys: bool = True) -> Iterator[SeedDocument]:
    """:func:`load_seeds` one document at a time: JSON documents as they are read (a fleet
    of 100,000 is never all parsed at once), then the DICOM studies."""
    by_study: dict[str, list[_Instance]] = {}
    for path in _files(paths):
        if path.suffix.lower() == ".json":
            yield load_json_document(path)
            continue
        if path.suffix.lower() in JSON_LINES:
            yield from load_json_lines(path)
            continue
        stat = path.stat()
        inst = _read_instance(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if inst is not None:
            by_study.setdefault(inst.study_uid, []).append(inst)
    for study_uid, instances in by_study.items():
        yield SeedDocument(study_uid, _assemble(instances, storage_keys), "dicom")


def load_json_document(path: Path) -> SeedDocument:
    try:
        text = path.read_text("utf-8")
    except (OSError, ValueError):
        raise SeedError(f"{path}: not a HealthImaging metadata document") from None
    return json_seed(text, str(path))


def load_json_lines(path: Path) -> Iterable[SeedDocument]:
    """A JSON-lines seed (``.jsonl`` / ``.ndjson``): one metadata document a line, blank lines
    skipped; the fast way to seed a fleet (one file read, one parse a document)."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        raise SeedError(f"{path}: cannot be read") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield json_seed(line, f"{path}:{number}")
        except UnicodeDecodeError:
            raise SeedError(f"{path}: not UTF-8 text") from None


def json_seed(text: str, where: str) -> SeedDocument:
    """One metadata document from its JSON text, shape-checked like every seed."""
    try:
        doc = json.loads(text)
        study_uid = doc["Study"]["DICOM"]["StudyInstanceUID"]
        doc["Study"]["Series"]  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError):
        raise SeedError(f"{where}: not a HealthImaging metadata document") from None
    original = doc.get("ImageSetID")
    valid = isinstance(original, str) and len(original) == 32 and original.isalnum() \
        and original == original.lower()
    return SeedDocument(str(study_uid), doc, "json", original if valid else None, text)
