"""The compiled record checks of :mod:`reconciler.states.validation` accept nothing the JSON
Schema refuses (when they refuse, jsonschema decides), and a broken state is still refused
naming the place."""

from __future__ import annotations

import copy

import pytest

from reconciler.core.errors import StateError
from reconciler.states import ImageSetRecord, State
from reconciler.states.validation import _problems, _records_ok, validate

IS1 = "1" * 32


def _doc() -> dict:
    state = State.new()
    state.put("ct-chest", ImageSetRecord(
        "d" * 32, IS1, "1", "2", "a" * 64, version_origin="1", peer_of="2" * 32,
        hashes=state.hash_values({"Patient.PatientName": "X", "Series[1.2.3].Instances[1.2.3.4]": None}, IS1)))
    return state.to_dict(serial=1)


def _mutations():
    wrong = [None, 1, 1.0, True, "", "x", "DOE^JANE", "1" * 33, "A" * 32, "12\n", [], {},
             "2025-01-31T12:00:00+01:00", "#" + "0" * 32]
    fields = ["datastore_id", "image_set_id", "version_before", "version_after", "applied_at",
              "spec_digest", "serial", "last_operation", "last_checked_at", "version_origin",
              "peer_of", "hashes"]
    for field in fields:
        for value in wrong:
            yield f"{field}={value!r}", lambda rec, f=field, v=value: rec.__setitem__(f, v)
        yield f"no {field}", lambda rec, f=field: rec.pop(f)
    yield "extra field", lambda rec: rec.__setitem__("value", "DOE")
    yield "serial 0", lambda rec: rec.__setitem__("serial", 0)
    for path in ("Patient.Patient Name", "Series[abc]", "Foo.Bar", "Series[1.2].Instances[#zz]"):
        yield f"path {path}", lambda rec, p=path: rec["hashes"].__setitem__(p, "a" * 64)
    for value in ("A" * 64, "a" * 63, None, 5):
        yield f"hash {value!r}", lambda rec, v=value: rec["hashes"].__setitem__("Patient.PatientName", v)


@pytest.mark.parametrize("name,mutate", list(_mutations()), ids=[n for n, _ in _mutations()])
def test_the_compiled_checks_accept_nothing_the_schema_refuses(name, mutate):
    doc = _doc()
    assert _records_ok(doc["specs"], doc["serial"]) and not _problems(doc)
    mutate(doc["specs"]["ct-chest"]["image_sets"][IS1])
    if _problems(copy.deepcopy(doc)):
        assert not _records_ok(doc["specs"], doc["serial"])


@pytest.mark.parametrize("spec,body", [("CT", {"image_sets": {}}), ("ct", {}),
                                       ("ct", {"image_sets": {}, "x": 1}), ("ct", [])])
def test_the_compiled_checks_refuse_a_bad_spec(spec, body):
    doc = _doc()
    doc["specs"][spec] = body
    assert _problems(copy.deepcopy(doc))
    assert not _records_ok(doc["specs"], doc["serial"])


def test_a_broken_record_is_still_refused_naming_where_and_what():
    doc = _doc()
    doc["specs"]["ct-chest"]["image_sets"][IS1]["hashes"]["Patient.PatientName"] = "DOE^JANE"
    with pytest.raises(StateError) as caught:
        validate(doc, "state.json")
    message = str(caught.value)
    assert f"specs/ct-chest/image_sets/{IS1}/hashes/Patient.PatientName" in message
    assert "'pattern'" in message and "DOE" not in message


def test_a_record_newer_than_the_state_is_refused():
    doc = _doc()
    doc["specs"]["ct-chest"]["image_sets"][IS1]["serial"] = 2
    with pytest.raises(StateError, match="a record newer than the state"):
        validate(doc)
