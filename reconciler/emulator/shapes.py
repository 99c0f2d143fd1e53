"""Values against botocore shapes: typing wire values and checking the model's constraints.

Used in both directions by :mod:`protocol`: request values are typed (JSON or query-string
text → Python; blobs base64-decoded, timestamps to epoch floats) and checked against
``required``, ``pattern`` (full match), ``min``/``max``, ``enum`` and union exclusivity;
response values are checked the same way and turned into JSON. Violation messages follow
AWS's ``Value '...' at 'path' failed to satisfy constraint: ...`` form and never echo the
value of a ``sensitive`` shape or a blob.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from functools import cache
from typing import Any

from botocore.model import Shape


class ServiceError(Exception):
    """An error the service answers with: the model's error shape ``code`` and a message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


class OutputError(AssertionError):
    """The emulator produced an output its own model rejects: a bug, answered with 500."""


# ------------------------------------------------------------------------ shape validation
def _java_regex(pattern: str) -> str:
    # The model's patterns are Java regexes; only \p{ASCII} needs translating for Python.
    return pattern.replace(r"\p{ASCII}", r"[\x00-\x7f]")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(_java_regex(pattern))


def _sensitive(shape: Shape) -> bool:
    return bool(shape.metadata.get("sensitive")) or shape.type_name == "blob"


def _show(shape: Shape, value: Any) -> str:
    if _sensitive(shape):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return f" '{text[:200]}'"


class Errors(list):
    def add(self, path: str, shape: Shape, value: Any, constraint: str) -> None:
        self.append(f"Value{_show(shape, value)} at '{path}' failed to satisfy constraint: "
                    f"{constraint}")


def check(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    """Check an already-typed ``value`` against the shape's constraints (recursively)."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        members = shape.members
        for name in shape.required_members:
            if value.get(name) is None:
                errors.append(f"Value null at '{_join(path, name)}' failed to satisfy "
                              f"constraint: Member must not be null")
        if getattr(shape, "is_tagged_union", False):
            present = [n for n in members if value.get(n) is not None]
            if len(present) != 1:
                got = ", ".join(present) if present else "none"
                errors.append(f"Value at '{path or shape.name}' failed to satisfy constraint: "
                              f"Union must have exactly one member set "
                              f"({' or '.join(members)}); got {len(present)}: {got}")
        for name, member in members.items():
            if value.get(name) is not None:
                check(member, value[name], _join(path, name), errors)
        return
    if kind == "list":
        _check_size(shape, value, len(value), path, errors)
        for i, item in enumerate(value):
            check(shape.member, item, f"{path}.{i + 1}.member", errors)
        return
    if kind == "map":
        _check_size(shape, value, len(value), path, errors)
        for key, item in value.items():
            check(shape.key, key, f"{path}.{key}.key", errors)
            check(shape.value, item, f"{path}.{key}.value", errors)
        return
    if kind == "string":
        _check_size(shape, value, len(value), path, errors)
        if "pattern" in meta and not _compiled(meta["pattern"]).fullmatch(value):
            errors.add(path, shape, value, "Member must satisfy regular expression pattern: "
                       + meta["pattern"])
        if shape.enum and value not in shape.enum:
            errors.add(path, shape, value, "Member must satisfy enum value set: ["
                       + ", ".join(shape.enum) + "]")
        return
    if kind == "blob":
        if isinstance(value, (bytes, bytearray)):
            _check_size(shape, value, len(value), path, errors)
        return
    if kind in ("integer", "long"):
        if "min" in meta and value < meta["min"]:
            errors.add(path, shape, value, f"Member must have value greater than or equal to "
                       f"{meta['min']}")
        if "max" in meta and value > meta["max"]:
            errors.add(path, shape, value, f"Member must have value less than or equal to "
                       f"{meta['max']}")


def _check_size(shape: Shape, value: Any, size: int, path: str, errors: Errors) -> None:
    meta = shape.metadata
    unit = "length" if shape.type_name in ("string", "blob") else "size"
    if "min" in meta and size < meta["min"]:
        errors.add(path, shape, value, f"Member must have {unit} greater than or equal to "
                   f"{meta['min']}")
    if "max" in meta and size > meta["max"]:
        errors.add(path, shape, value, f"Member must have {unit} less than or equal to "
                   f"{meta['max']}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def raise_if(errors: list[str]) -> None:
    if errors:
        n = len(errors)
        raise validation(f"{n} validation error{'s' if n > 1 else ''} detected: "
                         + "; ".join(errors))


# --------------------------------------------------------------------------------- parsing
def from_json(shape: Shape, value: Any, path: str, errors: Errors) -> Any:
    """Type a JSON value by its shape (blobs decoded, timestamps to epoch floats)."""
    if value is None:
        return None
    kind = shape.type_name

    def wrong(expected: str) -> None:
        errors.add(path, shape, value, f"Member must be {expected}")

    if kind == "structure":
        if not isinstance(value, dict):
            return wrong("a structure") or None
        out = {}
        wire_names = set()
        for name, member in shape.members.items():
            key = member.serialization.get("name", name)
            wire_names.add(key)
            if key in value:
                out[name] = from_json(member, value[key], _join(path, name), errors)
        unknown_members(value, wire_names, path, errors)
        return out
    if kind == "list":
        if not isinstance(value, list):
            return wrong("a list") or None
        return [from_json(shape.member, v, f"{path}.{i + 1}.member", errors)
                for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            return wrong("a map") or None
        return {k: from_json(shape.value, v, f"{path}.{k}", errors) for k, v in value.items()}
    if kind == "string":
        return value if isinstance(value, str) else wrong("a string")
    if kind == "boolean":
        return value if isinstance(value, bool) else wrong("a boolean")
    if kind in ("integer", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else wrong("an integer")
    if kind in ("float", "double"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else wrong("a number")
    if kind == "blob":
        if not isinstance(value, str):
            return wrong("a base64-encoded string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return wrong("valid base64")
    if kind == "timestamp":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
        return wrong("a timestamp (epoch seconds)")
    return value


def unknown_members(document: dict, known: set[str], path: str, errors: Errors) -> None:
    """A JSON object's keys that its shape does not have: each one a validation error (the
    name is shown, cut to 64 characters; never a value)."""
    for key in document:
        if key not in known:
            where = f" at '{path}'" if path else ""
            errors.append(f"Value{where} failed to satisfy constraint: Unknown member "
                          f"'{str(key)[:64]}'")


def from_text(shape: Shape, text: str, path: str, errors: Errors) -> Any:
    """Type a query-string or header value."""
    kind = shape.type_name
    if kind == "boolean":
        if text in ("true", "false"):
            return text == "true"
        errors.add(path, shape, text, "Member must be true or false")
        return None
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            errors.add(path, shape, text, "Member must be an integer")
            return None
    if kind == "timestamp":
        return from_json(shape, float(text) if text.replace(".", "", 1).isdigit() else text,
                          path, errors)
    return text


# ---------------------------------------------------------------------------- serialising
def to_json(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise OutputError(f"{path}: expected a structure")
        unknown = set(value) - set(shape.members)
        if unknown:
            raise OutputError(f"{path}: keys not in the model: {sorted(unknown)}")
        out = {}
        for name, member in shape.members.items():
            if value.get(name) is not None:
                out[member.serialization.get("name", name)] = to_json(
                    member, value[name], _join(path, name))
        return out
    if kind == "list":
        return [to_json(shape.member, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        return {k: to_json(shape.value, v, f"{path}.{k}") for k, v in value.items()}
    if kind == "timestamp":
        if isinstance(value, dt.datetime):
            return value.timestamp()
        return round(float(value), 3)
    if kind == "blob":
        return base64.b64encode(value).decode("ascii")
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise OutputError(f"{path}: expected an integer, got {type(value).__name__}")
    if kind == "string" and not isinstance(value, str):
        raise OutputError(f"{path}: expected a string, got {type(value).__name__}")
    if kind == "boolean" and not isinstance(value, bool):
        raise OutputError(f"{path}: expected a boolean")
    return value


