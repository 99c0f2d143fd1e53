"""The DICOM data dictionary as the project asks it: pydicom's ``datadict`` behind a few
questions (is this a tag, a private one, a known keyword; which VR and VM; which keyword did
a typo mean). The rest of the project asks them here; only :mod:`.redact` walks pydicom's
tables itself, to map the confidentiality profile's tags to keywords."""

from __future__ import annotations

import difflib
import re
from functools import cache


@cache
def _datadict():
    """pydicom's data dictionary, imported when first asked (then one lookup per call):
    importing pydicom costs ~0.14 s (its pixel handlers come with it), which a command that
    never asks (``state list``, which reads the project's config) need not pay."""
    from pydicom import datadict

    return datadict


_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


def is_tag(key: str) -> bool:
    return bool(_TAG.fullmatch(key))


def is_private_tag(key: str) -> bool:
    """8 hex digits with an odd group number (a private attribute's key)."""
    return is_tag(key) and int(key[:4], 16) % 2 == 1


def private_tag_problem(key: str) -> str | None:
    """Why an odd-group tag cannot be managed, or None. Private *creator* elements
    (gggg,0010-00FF) are refused: they reserve a block for a vendor, and changing one silently
    re-labels every data element of that block."""
    group, element = int(key[:4], 16), int(key[4:], 16)
    if group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF):
        return f"group {key[:4].upper()} is reserved by DICOM and cannot hold private attributes"
    if element < 0x0010:
        return f"({key[:4].upper()},{key[4:].upper()}) is not a private data element"
    if element <= 0x00FF:
        return (f"({key[:4].upper()},{key[4:].upper()}) is a private creator element; only "
                "private data elements (gggg,1000-FFFF) can be managed")
    return None


def standard_tag_problem(key: str) -> str | None:
    """A standard (even-group) attribute written as a tag: say which keyword to write."""
    if not is_tag(key) or is_private_tag(key):
        return None
    keyword = _datadict().keyword_for_tag(int(key, 16))
    if keyword:
        return f"standard attributes are keyed by keyword: write {keyword}"
    return (f"({key[:4].upper()},{key[4:].upper()}) has an even group, so it is not private, "
            "and it is not in the DICOM dictionary")


def keyword_exists(keyword: str) -> bool:
    return keyword in _datadict().keyword_dict


def dictionary_vr(keyword: str) -> str:
    """The dictionary VR of a known keyword as pydicom writes it (``US or SS`` included)."""
    datadict = _datadict()
    return datadict.dictionary_VR(datadict.tag_for_keyword(keyword))


def vr_of_keyword(keyword: str) -> str | None:
    """:func:`dictionary_vr`, or None for what is not a keyword of the dictionary."""
    tag = _datadict().tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return _datadict().dictionary_VR(tag)
    except KeyError:
        return None


def vr_choices(keyword: str) -> tuple[str, ...]:
    """The dictionary VR of a keyword, split: ``US or SS`` → ``("US", "SS")``."""
    tag = _datadict().tag_for_keyword(keyword)
    if tag is None:
        return ()
    return tuple(part.strip() for part in _datadict().dictionary_VR(tag).split(" or "))


def vr_for(key: str) -> str | None:
    """The VR of a standard keyword (the first choice when the dictionary gives several),
    or None for unknown keywords and private tags (their VR comes from the spec)."""
    choices = vr_choices(key)
    return choices[0] if choices else None


def vm_for(keyword: str) -> str:
    tag = _datadict().tag_for_keyword(keyword)
    return _datadict().dictionary_VM(tag) if tag is not None else "1-n"


def is_retired(keyword: str) -> bool:
    tag = _datadict().tag_for_keyword(keyword)
    return tag is not None and _datadict().dictionary_is_retired(tag)


@cache
def _keywords_by_lower() -> dict[str, str]:
    return {kw.lower(): kw for kw in _datadict().keyword_dict}


def suggest_keyword(word: str) -> str | None:
    """The dictionary keyword a typo most likely meant (``PatientsName`` → ``PatientName``)."""
    exact = _keywords_by_lower().get(word.lower())
    if exact:
        return exact
    close = difflib.get_close_matches(word, list(_datadict().keyword_dict), n=1, cutoff=0.8)
    return close[0] if close else None
