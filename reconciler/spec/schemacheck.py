"""JSON Schema validation of YAML documents, every error mapped back to a line and column.

The schemas in ``schemas/`` (installed as ``reconciler.schemas``) are the very files editors
use through ``# yaml-language-server: $schema=...``, so the structure of specs and of
``reconciler.yaml`` is written down once. ``jsonschema`` collects *all* errors
(``iter_errors``); this module turns each into a :class:`~reconciler.core.errors.Diagnostic` at the
offending node, with a message of its own: jsonschema's messages quote the instance, and spec
values are patient data. A subschema's ``errorMessage`` / ``patternErrorMessage`` (the
keywords VS Code's YAML and JSON servers show) is used when present, so editor and CLI say the
same thing.

:func:`check` also returns the paths it reported on, so later passes (DICOM rules) can stay
quiet where the structure is already known to be wrong instead of saying it twice.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ..core.errors import Diagnostic
from ..dicom.paths import display_key
from .yamlload import Document

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "number": "a number", "integer": "an integer", "boolean": "true or false",
               "null": "null"}

# The attribute maps of the spec schema: keyed by keyword, or by private (odd-group) tag.
_PRIVATE_TAG_PATTERN = "^[0-9A-Fa-f]{3}[13579BbDdFf][0-9A-Fa-f]{4}$"

# Keys people write by mistake, and what to say about them (keyed by the unknown key).
_HINTS = {
    "DICOM": "attributes go directly under the level; there is no DICOM key in a spec",
    "DICOMVRs": "a private attribute carries its VR itself: {vr: LO, value: ...}",
    "Instances": "Instances go under a series: attributes.Series[<SeriesInstanceUID>].Instances",
    "Series": "Series go directly under attributes: attributes.Series[<SeriesInstanceUID>]",
}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema of ``reconciler.schemas`` by file name, e.g. ``spec.v1.schema.json``."""
    text = resources.files("reconciler.schemas").joinpath(name).read_text("utf-8")
    return json.loads(text)


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator of a schema of ``reconciler.schemas``, made once, its local ``$ref``s
    inlined (specs, tables and saved plans are checked with it)."""
    schema = load_schema(name)
    return Draft202012Validator(_inline_refs(schema, schema.get("$defs", {}), ()))



_ANNOTATIONS = {"description", "title", "$comment"}


def _inline_refs(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> Any:
    """The schema with local ``$ref``s replaced by their targets, except recursive ones.
    Same meaning, but jsonschema no longer resolves a reference per node: validating a spec of
    5,000 instances gets about twice as fast."""
    if isinstance(node, list):
        return [_inline_refs(item, defs, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    name = ref[len("#/$defs/"):] if isinstance(ref, str) and ref.startswith("#/$defs/") else None
    if name is None or name in stack or name not in defs:
        return {k: _inline_refs(v, defs, stack) for k, v in node.items()}
    target = _inline_refs(defs[name], defs, stack + (name,))
    siblings = {k: _inline_refs(v, defs, stack) for k, v in node.items() if k != "$ref"}
    if set(siblings) - _ANNOTATIONS & set(target):
        return {"allOf": [target, siblings]}
    return {**target, **{k: v for k, v in siblings.items() if k not in target}}


KeyHint = Callable[[str], "str | None"]


def check(doc: Document, data: Any, schema_name: str, *,
          attribute_key_hint: KeyHint | None = None) -> tuple[list[Diagnostic], set[tuple]]:
    """Validate ``data`` (``doc.data``, possibly with strings coerced) against a schema.
    Returns the diagnostics and the set of paths they flag as structurally wrong.
    ``attribute_key_hint(key)`` may explain a key refused in an attribute map."""
    diagnostics: list[Diagnostic] = []
    flagged: set[tuple] = set()
    seen: set[tuple] = set()
    for error in validator(schema_name).iter_errors(data):
        for path, message, at_key, flag in _explain(error, attribute_key_hint):
            if (path, message) in seen:
                continue
            seen.add((path, message))
            diagnostics.append(doc.diagnostic(path, message, at_key=at_key))
            if flag:
                flagged.add(path)
    return diagnostics, flagged


def is_flagged(path: tuple, flagged: set[tuple]) -> bool:
    """Whether ``path`` or one of its ancestors was already reported by the schema pass."""
    return any(path[:i] in flagged for i in range(len(path) + 1))


def _explain(error: ValidationError,
             key_hint: KeyHint | None) -> Iterable[tuple[tuple, str, bool, bool]]:
    """(path, message, at the key?, flag the path?) for one jsonschema error."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator

    if "propertyNames" in error.absolute_schema_path:      # a mapping key is wrong
        key = error.instance
        if kind == "enum":
            message = (schema.get("errorMessage") or "unknown key") + _suggestion(
                key, error.validator_value)
        else:
            message = schema.get("errorMessage") or _generic(error, schema)
        yield path + (key,), message, True, True
        return
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        for key in error.instance:
            if key in allowed or any(p.search(key) for p in patterns):
                continue
            hint = _HINTS.get(key)
            message = f"unknown key {display_key(key)}" + (
                f": {hint}" if hint else _suggestion(key, allowed))
            if _PRIVATE_TAG_PATTERN in schema.get("patternProperties", {}) and not hint:
                message = (key_hint and key_hint(key)) or (
                    f"{display_key(key)} is not an attribute key: write a DICOM keyword "
                    "(e.g. PatientName) or a private tag of 8 hex digits")
            yield path + (key,), message, True, True
        return
    if kind == "required":
        if schema.get("errorMessage"):
            yield path, schema["errorMessage"], False, True
            return
        present = error.instance if isinstance(error.instance, dict) else {}
        for name in error.validator_value:
            if name not in present:
                yield path, f"missing required key {name}", False, False
        return
    message = schema.get("errorMessage") or _generic(error, schema)
    # Object-level combinators say something about the whole mapping: do not silence it.
    flag = kind not in ("oneOf", "anyOf", "allOf", "dependentRequired", "minProperties")
    yield path, message, False, flag


def _generic(error: ValidationError, schema: dict[str, Any]) -> str:
    kind, expected = error.validator, error.validator_value
    if kind == "type":
        names = [_TYPE_NAMES.get(t, t) for t in ([expected] if isinstance(expected, str)
                                                  else expected)]
        found = _json_type(error.instance)
        return f"must be {' or '.join(names)}, not {_TYPE_NAMES.get(found, found)}"
    if kind == "const":
        return f"must be {expected}"
    if kind == "enum":
        choices = ", ".join(str(v) for v in expected)
        return f"must be one of: {choices}" + (
            _suggestion(error.instance, expected) if isinstance(error.instance, str) else "")
    if kind == "pattern":
        return schema.get("patternErrorMessage") or f"does not match the pattern {expected}"
    if kind == "maxLength":
        return f"is longer than {expected} characters"
    if kind == "minLength":
        return "must not be empty"
    if kind in ("minItems", "minProperties"):
        return "must not be empty"
    if kind in ("exclusiveMinimum", "minimum"):
        return f"must be greater than {'or equal to ' if kind == 'minimum' else ''}{expected}"
    if kind == "not":
        return "is not allowed here"
    return f"is invalid ({kind})"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _suggestion(word: Any, choices: Iterable[Any]) -> str:
    options = [c for c in choices if isinstance(c, str)]
    if not isinstance(word, str) or not options:
        return ""
    lowered = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.7)
    return f"; did you mean {lowered[close[0]]}?" if close else ""
