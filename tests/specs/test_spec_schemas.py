"""The schema files themselves: valid JSON Schemas, the very files the code validates with,
in step with the code's tables, and documented enough for editors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydicom.valuerep import VR_REGEXES
from spec_helpers import CASES

from reconciler.data import service_facts
from reconciler.dicom import valuerep
from reconciler.spec.schemacheck import load_schema

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NAMES = ["spec.v1.schema.json", "config.v1.schema.json"]


@pytest.mark.parametrize("name", NAMES)
def test_schema_files_are_valid_2020_12_schemas(name):
    schema = json.loads((SCHEMAS / name).read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert load_schema(name) == schema     # the code validates with the same file


def test_schemas_are_in_step_with_the_code():
    spec = load_schema("spec.v1.schema.json")
    assert spec["$defs"]["privateAttribute"]["properties"]["vr"]["enum"] == list(valuerep.PRIVATE_VRS)
    assert spec["$defs"]["uid"]["pattern"] == VR_REGEXES["UI"]
    config = load_schema("config.v1.schema.json")
    assert config["properties"]["quotas"]["propertyNames"]["enum"] == sorted(service_facts.quotas())


def test_level_keywords_are_listed_for_editor_completion():
    spec = load_schema("spec.v1.schema.json")
    levels = {level: [e["keyword"] for e in entries]
              for level, entries in service_facts.normalization()["levels"].items()}
    attributes = spec["properties"]["attributes"]["properties"]
    assert list(attributes["Patient"]["properties"]) == levels["Patient"]
    assert list(attributes["Study"]["properties"]) == levels["Study"]
    assert list(spec["$defs"]["series"]["properties"]) == ["Instances", *levels["Series"]]
    assert attributes["Patient"]["properties"]["PatientName"]["description"] == \
        "Patient's Name (0010,0010), VR PN, VM 1."


def _properties(schema):
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            yield name, sub
        for key, value in schema.items():
            if key != "if":    # conditions name properties, they do not define them
                yield from _properties(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _properties(item)


@pytest.mark.parametrize("name", NAMES)
def test_every_named_property_is_described_for_editors(name):
    schema = load_schema(name)
    undocumented = [prop for prop, sub in _properties(schema)
                    if isinstance(sub, dict) and "description" not in sub
                    and set(sub) - {"not", "errorMessage"}]   # the "not allowed here" guards
    assert undocumented == []


@pytest.mark.parametrize("case", sorted((CASES / "valid").glob("*.yaml")), ids=lambda p: p.name)
def test_valid_cases_pass_the_schema_as_an_editor_sees_them(case):
    validator = Draft202012Validator(load_schema(
        "config.v1.schema.json" if case.name == "reconciler.yaml" else "spec.v1.schema.json"))
    for document in yaml.safe_load_all(case.read_text("utf-8")):
        # an editor reads 20240105 or 1234 as numbers: the schema accepts them where the
        # code takes the text as written (attribute values, labels, selector strings)
        assert [e.message for e in validator.iter_errors(document)] == []
