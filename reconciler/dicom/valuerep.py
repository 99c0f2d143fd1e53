"""DICOM rules for spec values, on top of pydicom's data dictionary and VR validators.

pydicom knows the keywords, VRs and VMs (``pydicom.datadict``) and each VR's format
(``pydicom.valuerep.validate_value``). It does not know, and this module adds:

* that a stored DA/DT is one calendar date, not a query range (its regexes accept
  ``20240231`` and ``20240101-``); DT offsets within -1200..+1400; PN name parts ≤ 5;
  IS within 32 bits; no backslash (the value separator) inside one value; control characters;
* value multiplicity against the dictionary VM;
* HealthImaging's JSON value form (``reconciler.spec.types``): the *source text* of a YAML scalar
  for string VRs (``StudyDate: 20240105`` → ``"20240105"``, ``5.0`` → ``"5.0"``), numbers for
  binary numeric VRs, base64 for bulk VRs, lists for several values, lists of keyword-keyed
  items for sequences;
* messages that never contain the value: pydicom's messages quote it, and values are PHI.

Everything is reported as :class:`ValueProblem` (a path relative to the attribute's value and a
message); nothing here raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom import config as pydicom_config
from pydicom.valuerep import DA, DT, MAX_VALUE_LEN, validate_value

from ..data import service_facts
from .dictionary import dictionary_vr, is_tag, keyword_exists, suggest_keyword, vm_for, vr_for
from .paths import display_key

STRING_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                        "ST", "TM", "UC", "UI", "UR", "UT"})
INTEGER_VRS = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF),
               "SL": (-0x80000000, 0x7FFFFFFF), "UV": (0, 0xFFFFFFFFFFFFFFFF),
               "SV": (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF)}
FLOAT_VRS = {"FL": 3.4028234663852886e38, "FD": math.inf}
BULK_VRS = {"OB": 1, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2, "UN": 1}  # base64, unit bytes
TEXT_VRS = frozenset({"LT", "ST", "UT"})   # may hold CR, LF, TAB, FF and backslashes
#: VRs a private attribute may declare (sequences are not supported for private tags).
PRIVATE_VRS = tuple(sorted(STRING_VRS | set(INTEGER_VRS) | set(FLOAT_VRS) | set(BULK_VRS)))

_HINTS = {
    "AE": "up to 16 printable characters", "AS": "nnnD, nnnW, nnnM or nnnY, e.g. 045Y",
    "AT": "a tag as 8 hex digits, e.g. 00100010",
    "CS": "upper-case letters, digits, space and underscore", "DA": "YYYYMMDD",
    "DS": "a decimal number such as 5.0 or -1.5e3", "DT": "YYYYMMDDHHMMSS.FFFFFF&ZZXX",
    "IS": "an integer", "TM": "HHMMSS.FFFFFF", "UI": "digits and dots, no leading zeros "
    "in a component", "UR": "a URI without spaces",
}
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")          # ESC (0x1b) is ISO 2022
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_IMPORT_VALUE_LIMITS = {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}


@dataclass(frozen=True)
class ValueProblem:
    path: tuple          # relative to the attribute's value: () itself, (1,) its second value
    message: str
    at_key: bool = False  # about the mapping key at ``path`` (a sequence item's keyword)


TextOf = Callable[[tuple], "str | None"]


def vm_allows(vm: str, count: int) -> bool:
    """Whether ``count`` values fit a dictionary VM such as ``1``, ``1-3``, ``1-n``, ``2-2n``."""
    low, _, high = vm.partition("-")
    try:
        minimum = int(low)
        if not high:
            return count == minimum
        if high == "n":
            return count >= minimum
        if high.endswith("n"):
            return count >= minimum and count % int(high[:-1]) == 0
        return minimum <= count <= int(high)
    except ValueError:   # an unexpected VM string: do not block the user on it
        return True


def _vm_text(vm: str) -> str:
    low, _, high = vm.partition("-")
    if not high:
        return f"exactly {low} value{'s' if low != '1' else ''}"
    if high == "n":
        return f"{low} or more values"
    if high.endswith("n"):
        return f"a multiple of {high[:-1]} values"
    return f"{low} to {high} values"


def effective_vr(vr: str, value: Any) -> str:
    """One VR out of a dictionary alternative (``US or SS``) for a converted value."""
    choices = [part.strip() for part in vr.split(" or ")]
    if len(choices) == 1:
        return choices[0]
    values = value if isinstance(value, list) else [value]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers or not any(isinstance(v, str) for v in values):
        signed = [c for c in choices if c in ("SS", "SL")]
        if signed and any(v < 0 for v in numbers):
            return signed[0]
        return next((c for c in choices if c in INTEGER_VRS), choices[0])
    return next((c for c in choices if c in BULK_VRS), choices[0])


# --------------------------------------------------------------------------------------------
# One value
# --------------------------------------------------------------------------------------------
def check_text(vr: str, value: str) -> str | None:
    """The problem with one string value of a string VR, or None. Never quotes the value."""
    if value == "":
        return None
    if vr not in TEXT_VRS and "\\" in value:
        return "contains a backslash, the DICOM value separator; write several values as a list"
    if (_TEXT_CONTROL if vr in TEXT_VRS else _CONTROL).search(value):
        return f"contains control characters, which VR {vr} does not allow"
    if vr == "AT":
        return None if is_tag(value) else f"is not a valid AT value ({_HINTS['AT']})"
    try:
        validate_value(vr, value, pydicom_config.RAISE)
    except ValueError:   # pydicom's message quotes the value: phrase our own
        limit = MAX_VALUE_LEN.get(vr)
        if limit and len(value) > limit:
            return f"is {len(value)} characters long; VR {vr} allows at most {limit}"
        if vr == "PN":
            return "has more than 3 component groups or a group longer than 64 characters"
        return f"is not a valid {vr} value ({_HINTS.get(vr, vr)})"
    return _check_beyond_pydicom(vr, value)


def _check_beyond_pydicom(vr: str, value: str) -> str | None:
    if vr == "DA":
        if not re.fullmatch(r"\d{8}", value):
            return f"is not a single date ({_HINTS['DA']}; ranges are for queries)"
        try:
            DA(value)
        except ValueError:
            return "is not a calendar date"
    elif vr == "DT":
        if not _DT.fullmatch(value):
            return f"is not a single date-time ({_HINTS['DT']}; ranges are for queries)"
        try:
            DT(value)
        except ValueError:
            return "is not a calendar date and time"
        offset = re.search(r"([+-])(\d\d)(\d\d)$", value)
        if offset and not (-1200 <= int(offset[1] + offset[2] + offset[3]) <= 1400
                           and int(offset[3]) < 60):
            return "has a UTC offset outside -1200..+1400"
    elif vr == "TM" and "-" in value:
        return f"is not a single time ({_HINTS['TM']}; ranges are for queries)"
    elif vr == "PN":
        for group in value.split("="):
            if group.count("^") > 4:
                return ("has more than 5 name components (family^given^middle^prefix^suffix) "
                        "in a component group")
    elif vr == "IS" and not (-2**31 <= int(value) <= 2**31 - 1):
        return "is outside the range of VR IS (a signed 32-bit integer)"
    return None


def _check_number(vr: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number (VR {vr}), not {_kind(value)}"
    if vr in INTEGER_VRS:
        low, high = INTEGER_VRS[vr]
        if isinstance(value, float) and not value.is_integer():
            return f"must be an integer (VR {vr})"
        if not low <= value <= high:
            return f"is outside the range of VR {vr} ({low} to {high})"
        return None
    if not math.isfinite(value):
        return "must be a finite number (JSON has no NaN or infinity)"
    if abs(value) > FLOAT_VRS[vr]:
        return f"is outside the range of VR {vr}"
    return None


def _check_bulk(vr: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a base64 string (VR {vr}), not {_kind(value)}"
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"is not valid base64 (VR {vr} values are base64-encoded bytes)"
    if len(data) % BULK_VRS[vr]:
        return f"decodes to {len(data)} bytes; VR {vr} needs a multiple of {BULK_VRS[vr]}"
    return None


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "a list", dict: "a mapping",
            type(None): "null"}.get(type(value), "a number")


def _import_limit(keyword: str | None, value: Any) -> str | None:
    """HealthImaging's import-time limits, a second layer under the VR's own."""
    limit = service_facts.length_limits().get(keyword or "")
    if limit is None or value is None:
        return None
    if keyword in _IMPORT_VALUE_LIMITS:
        try:
            too_big = int(str(value).strip()) > limit
        except ValueError:
            return None
        return f"exceeds HealthImaging's maximum of {limit}" if too_big else None
    if isinstance(value, str) and len(value) > limit:
        return f"is longer than HealthImaging's limit of {limit} characters for {keyword}"
    return None


# --------------------------------------------------------------------------------------------
# Conversion to the service's value form
# --------------------------------------------------------------------------------------------
def convert(vr: str, raw: Any, *, vm: str = "1", keyword: str | None = None,
            text_of: TextOf = lambda path: None) -> tuple[Any, list[ValueProblem]]:
    """Check ``raw`` (as YAML gave it) against a VR, its VM and HealthImaging's limits, and
    return it in the service's JSON form. ``vr`` may be a dictionary alternative such as
    ``US or SS``. ``text_of(path)`` gives a plain scalar's source text (relative path)."""
    problems: list[ValueProblem] = []
    value = _convert(vr, raw, vm, keyword, text_of, (), problems)
    return value, problems


def _convert(vr: str, raw: Any, vm: str, keyword: str | None, text_of: TextOf, path: tuple,
             problems: list[ValueProblem]) -> Any:
    choices = [part.strip() for part in vr.split(" or ")]
    if raw is None:
        return None
    if choices == ["SQ"]:
        return _sequence(raw, text_of, path, problems)
    if isinstance(raw, dict):
        problems.append(ValueProblem(path, f"a mapping is not a value for VR {vr}"))
        return None
    if isinstance(raw, list):
        if not raw:
            problems.append(ValueProblem(path, 'an empty list is not a value; write "" for an '
                                               "empty value or null to remove the attribute"))
            return None
        if any(c in BULK_VRS for c in choices) and len(raw) > 1:
            problems.append(ValueProblem(path, f"VR {vr} takes a single base64 value"))
            return None
        if not vm_allows(vm, len(raw)):
            problems.append(ValueProblem(path, f"has {len(raw)} values; {keyword or 'it'} "
                                               f"takes {_vm_text(vm)} (VM {vm})"))
        items = [_one(choices, item, keyword, text_of, path + (i,), problems, in_list=True)
                 for i, item in enumerate(raw)]
        return items if len(items) > 1 else items[0]   # one value is written as a scalar
    if not vm_allows(vm, 1) and raw != "":
        problems.append(ValueProblem(path, f"has 1 value; {keyword or 'it'} takes "
                                           f"{_vm_text(vm)} (VM {vm}): write a list"))
    return _one(choices, raw, keyword, text_of, path, problems, in_list=False)


def _one(choices: list[str], raw: Any, keyword: str | None, text_of: TextOf, path: tuple,
         problems: list[ValueProblem], *, in_list: bool) -> Any:
    vr = choices[0]
    if raw is None:
        if any(c in STRING_VRS for c in choices):
            return None   # an empty value among several: "A\\" is ["A", null]
        problems.append(ValueProblem(path, f"an empty value is not allowed in a list of VR {vr}"))
        return None
    if isinstance(raw, (list, dict)):
        problems.append(ValueProblem(path, f"{_kind(raw)} is not a single value of VR {vr}"))
        return None
    messages = []
    for choice in choices:
        value, message = _one_of_vr(choice, raw, text_of, path)
        if message is None:
            message = _import_limit(keyword, value)
        if message is None:
            return value
        messages.append(message)
    problems.append(ValueProblem(path, messages[0]))
    return None


def _one_of_vr(vr: str, raw: Any, text_of: TextOf, path: tuple) -> tuple[Any, str | None]:
    if vr in STRING_VRS:
        if isinstance(raw, str):
            text = raw
        else:   # YAML read int/float/bool from a plain scalar: keep what was written
            text = text_of(path)
            if text is None:
                if isinstance(raw, bool):
                    return None, f"must be a string (VR {vr}), not a boolean"
                text = str(raw)
        return text, check_text(vr, text)
    if vr in INTEGER_VRS or vr in FLOAT_VRS:
        return raw, _check_number(vr, raw)
    if vr in BULK_VRS:
        return raw, _check_bulk(vr, raw)
    return None, f"attributes of VR {vr} cannot be set"


def _sequence(raw: Any, text_of: TextOf, path: tuple, problems: list[ValueProblem]) -> Any:
    if not isinstance(raw, list):
        problems.append(ValueProblem(path, "a sequence (VR SQ) takes a list of items "
                                           "(mappings of keyword: value), or [] for none"))
        return None
    items = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            problems.append(ValueProblem(path + (i,), "a sequence item must be a mapping of "
                                                      "keyword: value"))
            continue
        out: dict[str, Any] = {}
        for key, value in item.items():
            here = path + (i, key)
            problem = item_keyword_problem(key)
            if problem:
                problems.append(ValueProblem(here, problem, at_key=True))
                continue
            out[key] = _convert(dictionary_vr(key), value, vm_for(key), key, text_of, here,
                                problems)
        items.append(out)
    return items


def item_keyword_problem(key: str) -> str | None:
    """Why ``key`` cannot be an attribute inside a sequence item, or None."""
    if is_tag(key):
        return "private or tag-keyed attributes are not supported inside sequence items"
    return unknown_keyword_problem(key)


def unknown_keyword_problem(key: str) -> str | None:
    """Why ``key`` is not a usable standard keyword (with a suggestion), or None."""
    if key in service_facts.GENERATED_ATTRIBUTES:
        return f"{key} is generated by HealthImaging and cannot be changed"
    if not keyword_exists(key):
        hint = suggest_keyword(key)
        return f"unknown DICOM keyword {display_key(key)}" + (
            f"; did you mean {hint}?" if hint else "")
    if vr_for(key) == "NONE":
        return f"{key} is a DICOM encoding item, not an attribute"
    return None
