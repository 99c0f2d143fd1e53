"""Managed attribute paths: the one name every layer gives a managed item of an image set.

A spec manages attributes at HealthImaging's four levels, and the whole presence of series
and instances. Each such item has one path, used for overlap checks between specs, the
state's hashes, ``ignore`` globs in ``reconciler.yaml``, drift reports and messages:

* ``Patient.PatientName``, ``Study.StudyDescription``;
* ``Series[1.2.3]`` (the series' presence), ``Series[1.2.3].SeriesDescription``;
* ``Series[1.2.3].Instances[1.2.3.4]`` (the instance's presence),
  ``Series[1.2.3].Instances[1.2.3.4].ImageComments``.

UIDs go in brackets because they contain dots. Paths are built by :func:`attribute_path`,
:func:`series_path` and :func:`instance_path`, and read back by :func:`parse`; nothing else
writes or splits them (``reconciler.yaml``'s globs use :func:`pattern` with wider classes).
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from ..data.service_facts import INSTANCE, PATIENT, SERIES, STUDY


def attribute_path(level: str, key: str) -> str:
    """A Patient- or Study-level attribute: ``Patient.PatientName``."""
    if level not in (PATIENT, STUDY):
        raise ValueError(f"{level} attributes are addressed through their series or instance")
    return f"{level}.{key}"


def series_path(series_uid: str, key: str | None = None) -> str:
    """A series (its presence) or one of its Series-level attributes."""
    base = f"{SERIES}[{series_uid}]"
    return base if key is None else f"{base}.{key}"


def instance_path(series_uid: str, sop_uid: str, key: str | None = None) -> str:
    """An instance (its presence) or one of its Instance-level attributes."""
    base = f"{series_path(series_uid)}.Instances[{sop_uid}]"
    return base if key is None else f"{base}.{key}"


class ManagedPath(NamedTuple):
    level: str                 # Patient | Study | Series | Instance
    key: str | None            # None: the series' or instance's presence
    series: str | None = None
    instance: str | None = None


def pattern(uid: str, key: str, level: str = f"{PATIENT}|{STUDY}") -> str:
    """The regular expression of a path whose UIDs match ``uid``, keys ``key`` and the first
    part of a Patient/Study path ``level``, with the groups ``level``, ``key``, ``series``,
    ``instance`` and ``skey`` (the key of a series or instance path)."""
    return (rf"^(?:(?P<level>{level})\.(?P<key>{key})"
            rf"|{SERIES}\[(?P<series>{uid})\](?:\.Instances\[(?P<instance>{uid})\])?"
            rf"(?:\.(?P<skey>{key}))?)$")


_PATH = re.compile(pattern(uid=r"[^\]]+", key=r"[^.\[\]]+"))


def parse(path: str) -> ManagedPath:
    """A path's parts; ValueError when ``path`` is not a managed path."""
    match = _PATH.match(path)
    if not match:
        raise ValueError(f"not a managed attribute path: {path}")
    if match["level"]:
        return ManagedPath(match["level"], match["key"])
    level = INSTANCE if match["instance"] else SERIES
    return ManagedPath(level, match["skey"], match["series"], match["instance"])


def containers(path: str) -> list[str]:
    """The series and instance paths that hold ``path``, outermost first (a removed series
    holds everything under it)."""
    parts = parse(path)
    if parts.series is None:
        return []
    out = []
    if parts.instance is not None or parts.key is not None:
        out.append(series_path(parts.series))
    if parts.instance is not None and parts.key is not None:
        out.append(instance_path(parts.series, parts.instance))
    return out


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def is_simple_key(key: str) -> bool:
    """A key a message may show bare (a word: letters, digits, ``_``, ``-``; nothing after)."""
    return bool(_SIMPLE_KEY.fullmatch(key))


def display_key(key: str) -> str:
    """A mapping key as a message may show it: simple words as they are, anything else quoted
    with escapes (a key may hold newlines) and cut to a readable length."""
    if is_simple_key(key) and len(key) <= 64:
        return key
    return json.dumps(key if len(key) <= 64 else key[:61] + "...", ensure_ascii=False)
