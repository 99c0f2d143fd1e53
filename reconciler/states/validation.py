"""The state document's checks: its JSON Schema (``schemas/state.v1.schema.json``, the very
file editors and users read) and the invariants the schema cannot say. Messages name paths
and rules, never values: a value where a hash belongs would be patient data."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from ..core.errors import StateError

FORMAT_VERSION = "2"
LEGACY_FORMAT = "1"           # salted hashes, no keys: read, and re-keyed on first use
SCHEMA_FILE = "state.v1.schema.json"


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("reconciler.schemas").joinpath(SCHEMA_FILE).read_text("utf-8"))


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def validate(doc: Any, source: str = "state") -> dict[str, Any]:
    """Format version first (a newer one is refused with its own message), then the schema,
    then the invariants the schema cannot say. Messages name paths and rules, never values."""
    if not isinstance(doc, dict):
        raise StateError(f"{source}: not a reconciler state (expected a JSON object)")
    version = doc.get("format_version")
    if isinstance(version, str) and version.isdigit() and int(version) > int(FORMAT_VERSION):
        writer = doc.get("reconciler_version")
        by = f" (written by reconciler {writer})" if isinstance(writer, str) else ""
        raise StateError(f"{source}: state format_version {version}{by} is newer than this "
                         f"reconciler reads ({FORMAT_VERSION}); upgrade reconciler to use this state")
    problems = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StateError(f"{source}: not a valid state at {_where(first)}: {_describe(first)}{more}")
    for name, body in doc["specs"].items():
        for isid, rec in body["image_sets"].items():
            where = f"specs/{name}/image_sets/{isid}"
            if rec["image_set_id"] != isid:
                raise StateError(f"{source}: not a valid state at {where}: image_set_id differs from its key")
            if rec["serial"] > doc["serial"]:
                raise StateError(f"{source}: not a valid state at {where}/serial: "
                                 f"a record newer than the state")
    for ds, checkpoint in (doc.get("drift_checkpoints") or {}).items():
        if checkpoint["records_serial"] > doc["serial"]:
            raise StateError(f"{source}: not a valid state at drift_checkpoints/{ds}/records_serial: "
                             f"a checkpoint newer than the state")
    return doc


def _where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(root)"


def _describe(error: jsonschema.ValidationError) -> str:
    # jsonschema's own messages quote the offending instance, which could be a value someone
    # pasted where a hash belongs; only messages that quote property *names* are passed on.
    if error.validator == "required":
        return error.message                      # names one of our own keys
    if error.validator == "additionalProperties":
        return "has a property the schema does not allow"
    if error.validator == "const":
        return f"must be {error.validator_value!r}"
    if error.validator == "propertyNames":
        return "a key does not have the expected form"
    if error.validator in ("pattern", "type", "enum", "minimum", "maxLength"):
        return f"fails '{error.validator}' {error.validator_value!r}"
    return f"fails '{error.validator}'"
