"""HealthImaging facts shared by the reconciler and the emulator, read from ``reconciler/data``.

This module is a leaf: it imports nothing of the project, so both the engine and the emulator
may use it without importing each other (see ``.importlinter``). It holds data, not rules:
each side implements its own checks on top of the same table, so a bug in one side's rules
shows up as a disagreement in the tests instead of hiding in shared code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

PATIENT, STUDY, SERIES, INSTANCE = "Patient", "Study", "Series", "Instance"
LEVELS = (PATIENT, STUDY, SERIES, INSTANCE)

# dicom-metadata-constraints (developer guide), as summarised in
# data/healthimaging-normalization.json "notes": keys the service generates and never lets a
# client update, and the attributes whose change needs force=true.
GENERATED_ATTRIBUTES = frozenset({
    "SchemaVersion", "DatastoreID", "ImageSetID", "PixelData", "Checksum", "Width", "Height",
    "MinPixelValue", "MaxPixelValue", "FrameSizeInBytes",
})
FORCE_REQUIRED_ATTRIBUTES = frozenset({
    "PixelData", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyID",
})


def _load(name: str) -> dict[str, Any]:
    return json.loads(resources.files("reconciler.data").joinpath(name).read_text("utf-8"))


@cache
def normalization() -> dict[str, Any]:
    """The whole normalisation document (levels, length limits, sources)."""
    return _load("healthimaging-normalization.json")


@cache
def level_of_keyword() -> dict[str, str]:
    """Keyword → ``Patient`` / ``Study`` / ``Series`` for the attributes HealthImaging lifts out
    of the instances. Any keyword not in this map lives at the ``Instance`` level."""
    table: dict[str, str] = {}
    for level, entries in normalization()["levels"].items():
        for entry in entries:
            table[entry["keyword"]] = level
    return table


@cache
def level_of_tag() -> dict[str, str]:
    """Same as :func:`level_of_keyword`, keyed by the 8-hex-digit tag (upper case)."""
    table: dict[str, str] = {}
    for level, entries in normalization()["levels"].items():
        for entry in entries:
            table[entry["tag"].upper()] = level
    return table


def level_for(keyword: str) -> str:
    return level_of_keyword().get(keyword, INSTANCE)


@cache
def length_limits() -> dict[str, int]:
    """Import-time maxima (string length; for the two counters, maximum value)."""
    return dict(normalization()["lengthLimits"])


@cache
def quotas() -> dict[str, dict[str, float]]:
    """Operation name → ``{"rate": requests per second, "burst": n}``, the published defaults."""
    return {op: dict(v) for op, v in _load("healthimaging-quotas.json")["operations"].items()}
