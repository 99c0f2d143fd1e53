"""The state document's checks: its JSON Schema (``schemas/state.v1.schema.json``, the very
file editors and users read) and the invariants the schema cannot say. Messages name paths
and rules, never values: a value where a hash belongs would be patient data."""

from __future__ import annotations

import json
import re
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


def validate(doc: Any, source: str = "state", records_checked: bool = False) -> dict[str, Any]:
    """Format version first (a newer one is refused with its own message), then the schema,
    then the invariants the schema cannot say. Messages name paths and rules, never values.
    ``records_checked``: the records are those a writer validated (bytes it recorded the
    digest of): only the document around them is checked."""
    if not isinstance(doc, dict):
        raise StateError(f"{source}: not a reconciler state (expected a JSON object)")
    version = doc.get("format_version")
    if isinstance(version, str) and version.isdigit() and int(version) > int(FORMAT_VERSION):
        writer = doc.get("reconciler_version")
        by = f" (written by reconciler {writer})" if isinstance(writer, str) else ""
        raise StateError(f"{source}: state format_version {version}{by} is newer than this "
                         f"reconciler reads ({FORMAT_VERSION}); upgrade reconciler to use this state")
    specs = doc.get("specs")
    fast = isinstance(specs, dict) and (records_checked or _records_ok(specs, doc.get("serial")))
    if fast:
        # Every record passed the compiled checks (which accept nothing the schema refuses):
        # the schema need only see the document around them. At 100,000 records this is the
        # difference between ~0.3 s and ~5 minutes of jsonschema.
        problems = _problems({**doc, "specs": {}})
    else:
        problems = _problems(doc)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StateError(f"{source}: not a valid state at {_where(first)}: {_describe(first)}{more}")
    for name, body in ({} if fast else doc["specs"]).items():   # fast: checked already
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


def _problems(doc: dict[str, Any]) -> list[jsonschema.ValidationError]:
    return sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))


# -- the records, compiled -----------------------------------------------------------------------
# The ``record`` and ``spec`` definitions of the schema as straight-line checks. They may refuse
# what the schema allows (an integer written 1.0, a pattern's trailing newline): then the
# document goes through jsonschema as a whole, which decides and names the problem. They must
# never allow what the schema refuses: tests/states/test_validation.py holds them to that.
def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(schema()["$defs"][name]["pattern"].removeprefix("^").removesuffix("$"))


@cache
def _compiled() -> tuple[re.Pattern[str], ...]:
    record = schema()["$defs"]["record"]["properties"]
    return (_pattern("specName"), _pattern("id"), _pattern("version"), _pattern("time"),
            _pattern("hash"), _pattern("attributePath"),
            re.compile(record["spec_digest"]["pattern"].removeprefix("^").removesuffix("$")))


_REQUIRED = frozenset(["datastore_id", "image_set_id", "version_before", "version_after",
                       "applied_at", "spec_digest", "serial", "last_operation", "last_checked_at",
                       "hashes"])
_ALLOWED = _REQUIRED | {"version_origin", "peer_of"}
_OPERATIONS = frozenset(["apply", "rollback"])


def _records_ok(specs: dict[str, Any], serial: Any) -> bool:
    """Whether every spec and record of ``specs`` is valid (and no record is newer than
    ``serial``). False: let jsonschema look (it may still find them valid)."""
    spec_name, id_, version, time_, hash_, path_, digest = _compiled()
    if type(serial) is not int:
        return False
    known_paths: set[str] = set()
    for name, body in specs.items():
        if (not spec_name.fullmatch(name) or type(body) is not dict or body.keys() != {"image_sets"}
                or type(body["image_sets"]) is not dict):
            return False
        for isid, rec in body["image_sets"].items():
            if type(rec) is not dict or not id_.fullmatch(isid):
                return False
            keys = rec.keys()
            if not (keys >= _REQUIRED and keys <= _ALLOWED):
                return False
            after, checked, number = rec["version_after"], rec["last_checked_at"], rec["serial"]
            if not (type(rec["datastore_id"]) is str and id_.fullmatch(rec["datastore_id"])
                    and rec["image_set_id"] == isid
                    and type(rec["version_before"]) is str and version.fullmatch(rec["version_before"])
                    and (after is None or (type(after) is str and version.fullmatch(after)))
                    and type(rec["applied_at"]) is str and time_.fullmatch(rec["applied_at"])
                    and type(rec["spec_digest"]) is str and digest.fullmatch(rec["spec_digest"])
                    and type(number) is int and 1 <= number <= serial
                    and type(rec["last_operation"]) is str and rec["last_operation"] in _OPERATIONS
                    and (checked is None or (type(checked) is str and time_.fullmatch(checked)))
                    and type(rec["hashes"]) is dict):
                return False
            for optional, pattern in (("version_origin", version), ("peer_of", id_)):
                value = rec.get(optional, "")
                if optional in rec and not (type(value) is str and pattern.fullmatch(value)):
                    return False
            for p, h in rec["hashes"].items():
                if p not in known_paths:
                    if not path_.fullmatch(p):
                        return False
                    known_paths.add(p)
                if not (type(h) is str and hash_.fullmatch(h)):
                    return False
    return True


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
