"""The documents' TypedDicts (reconciler/documents/types.py) name exactly the keys of their
JSON Schemas, required and optional alike, and their Literal types the schemas' enums: a key
added to one and not the other fails here."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from reconciler.documents import types

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text("utf-8"))


def _node(schema: dict, pointer: str) -> dict:
    """A subschema by a path of property names, ``[]`` for items, ``#name`` for a $defs."""
    node = schema
    for part in pointer.split("/") if pointer else []:
        if part.startswith("#"):
            node = schema["$defs"][part[1:]]
        elif part == "[]":
            node = node["items"]
        else:
            node = node["properties"][part]
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


CASES = [
    ("plan.v1.schema.json", "", types.PlanDocument),
    ("plan.v1.schema.json", "state", types.PlanStateRef),
    ("plan.v1.schema.json", "summary", types.PlanSummary),
    ("plan.v1.schema.json", "not_reread", types.NotReread),
    ("plan.v1.schema.json", "#imageSet", types.PlanEntry),
    ("plan.v1.schema.json", "#group", types.StudyUpdate),
    ("plan.v1.schema.json", "#member", types.StudyMember),
    ("plan.v1.schema.json", "#change", types.PlanChange),
    ("plan.v1.schema.json", "#request", types.PlanRequest),
    ("plan.v1.schema.json", "#removed", types.RemovedEntry),
    ("plan.v1.schema.json", "#moved", types.MovedEntry),
    ("plan.v1.schema.json", "#moved/image_sets/[]", types.MovedImageSet),
    ("plan.v1.schema.json", "#limits", types.PlanLimits),
    ("report.v1.schema.json", "", types.Report),
    ("report.v1.schema.json", "summary", types.ReportSummary),
    ("report.v1.schema.json", "image_sets/[]", types.ReportItem),
    ("drift.v1.schema.json", "", types.DriftReport),
    ("drift.v1.schema.json", "check", types.DriftCheck),
    ("drift.v1.schema.json", "check/datastores/[]", types.DriftDatastoreCheck),
    ("drift.v1.schema.json", "summary", types.DriftSummary),
    ("drift.v1.schema.json", "image_sets/[]", types.DriftEntry),
    ("drift.v1.schema.json", "image_sets/[]/attributes/[]", types.DriftAttribute),
]


@pytest.mark.parametrize("schema_name, pointer, typed", CASES,
                         ids=[f"{s.split('.')[0]}:{p or '/'}" for s, p, _ in CASES])
def test_a_typed_document_has_its_schemas_keys(schema_name, pointer, typed):
    node = _node(_schema(schema_name), pointer)
    assert set(typed.__annotations__) == set(node["properties"]), typed.__name__
    assert set(typed.__required_keys__) == set(node.get("required", [])), typed.__name__


@pytest.mark.parametrize("schema_name, pointer, literal", [
    ("plan.v1.schema.json", "#imageSet/action", types.Action),
    ("plan.v1.schema.json", "#change/op", types.ChangeOp),
    ("plan.v1.schema.json", "#removed/action", types.RemovedAction),
    ("report.v1.schema.json", "image_sets/[]/status", types.Status),
    ("report.v1.schema.json", "operation", typing.get_type_hints(types.Report)["operation"]),
    ("drift.v1.schema.json", "image_sets/[]/status",
     typing.get_type_hints(types.DriftEntry)["status"]),
])
def test_a_literal_has_its_schemas_enum(schema_name, pointer, literal):
    node = _node(_schema(schema_name), pointer)
    assert set(typing.get_args(literal)) == set(node["enum"])
