"""The state model alone: hashing, records, the document and its schema, the factory."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.core.errors import ConfigError, StateError
from reconciler.spec.config import StateConfig
from reconciler.states import ImageSetRecord, State, open_backend, utc_time
from reconciler.states.keys import derive
from reconciler.states.local import LocalBackend
from reconciler.states.records import OP_ROLLBACK
from reconciler.states.validation import FORMAT_VERSION, schema

DS, IS1, IS2 = "d" * 32, "1" * 32, "2" * 32
SECRET = "SMITH^JOHN^Q"


def record(state: State, image_set_id: str = IS1, **changes) -> ImageSetRecord:
    fields = dict(datastore_id=DS, image_set_id=image_set_id, version_before="3", version_after="4",
                  spec_digest="a" * 64,
                  hashes=state.hash_values({"Patient.PatientName": SECRET}, image_set_id))
    return ImageSetRecord(**{**fields, **changes})


def test_a_new_state_has_a_uuid4_lineage_a_random_salt_and_serial_zero():
    one, two = State.new(), State.new()
    assert one.serial == 0 and one.lineage != two.lineage and one.salt != two.salt
    assert len(bytes.fromhex(one.salt)) == 16 and one.salt_bytes == bytes.fromhex(one.salt)


def test_hash_value_is_an_hmac_bound_to_image_set_and_name_of_the_salted_sha256():
    state = State.new()
    value = {"b": [1, "x"], "a": None}
    inner = hashlib.sha256(state.salt_bytes + b'{"a":null,"b":[1,"x"]}').hexdigest()
    (key,) = state.open_keys().keys
    subkey = derive(key, "state/value")

    def expected(inner: str, bind: str = f"{IS1}/StudyID:") -> str:
        return hmac.new(subkey, (bind + inner).encode(), "sha256").hexdigest()

    def h(value, path="Study.StudyID", image_set_id=IS1):
        return state.hash_value(value, image_set_id, path)

    assert h(value) == expected(inner)
    assert h(value) != inner                                      # keyed, not salted only
    assert h(value) == h({"a": None, "b": [1, "x"]})
    assert h(None) != h("")                                       # absent is not empty
    assert State.new().hash_value(SECRET, IS1, "Study.StudyID") != h(SECRET)   # a key per state
    # Equal values of other image sets or attributes hash apart: no linkage across records.
    assert h(SECRET) != h(SECRET, image_set_id=IS2) and h(SECRET) != h(SECRET, "Study.StudyID2")
    assert h(None, "Series[1.2]") == expected(hashlib.sha256(state.salt_bytes + b"null")
                                              .hexdigest(), f"{IS1}/Series:")
    inner = hashlib.sha256(state.salt_bytes + '"É"'.encode()).hexdigest()
    assert h("É") == expected(inner)


def test_hash_value_refuses_what_is_not_json_without_quoting_it():
    state = State.new()
    with pytest.raises(TypeError) as caught:
        state.hash_value({SECRET: object()}, IS1, "Study.StudyID")
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError):
        state.hash_value(float("nan"), IS1, "Study.StudyID")


def test_matches_compares_a_live_value_with_the_recorded_hash():
    state = State.new()
    rec = state.put("s", record(state))
    assert state.matches(rec, "Patient.PatientName", SECRET) is True
    assert state.matches(rec, "Patient.PatientName", "SMITH^JOHN") is False
    assert state.matches(rec, "Study.StudyDescription", "x") is None


def test_put_get_remove_and_list():
    state = State.new()
    first = state.put("b-spec", record(state, IS2))
    state.put("b-spec", record(state, IS1))
    state.put("a-spec", record(state, IS1, last_operation=OP_ROLLBACK))
    assert first.serial == 1 and len(state) == 3
    assert [(n, r.image_set_id) for n, r in state] == [("a-spec", IS1), ("b-spec", IS1), ("b-spec", IS2)]
    assert state.get("a-spec", IS1).last_operation == "rollback"
    assert state.get("a-spec", IS2) is None and state.get("nope", IS1) is None
    assert state.remove("b-spec", IS2) == 1 and state.remove("b-spec", IS2) == 0
    assert state.remove("a-spec") == 1 and state.spec_names() == ["b-spec"]
    assert state.records("b-spec") == [("b-spec", state.get("b-spec", IS1))]
    with pytest.raises(ValueError):
        state.put("x", record(state, last_operation="delete"))


def test_put_copies_the_hashes():
    state = State.new()
    hashes = state.hash_values({"Study.StudyID": "1"}, IS1)
    state.put("s", record(state, hashes=hashes))
    hashes["Study.StudyID"] = "0" * 64
    assert state.get("s", IS1).hashes["Study.StudyID"] != "0" * 64


def test_json_round_trip_is_deterministic_and_carries_every_field():
    state = State.new()
    state.last_checked_at = "2025-01-02T03:04:05+00:00"
    noon = datetime.datetime(2025, 1, 1, 12, tzinfo=datetime.timezone.utc)
    state.put("s", record(state, last_checked_at="2025-01-02T03:04:05Z", applied_at=utc_time(noon)))
    text = state.to_json(serial=1)
    assert text == state.to_json(serial=1)
    doc = json.loads(text)
    assert list(doc) == sorted(doc) and text.startswith('{\n  "format_version": "2"')
    again = State.from_json(text)
    assert again.to_dict() == {**state.to_dict(), "serial": 1}
    assert again.get("s", IS1).applied_at == "2025-01-01T12:00:00+00:00"


def test_utc_time_needs_an_aware_time():
    with pytest.raises(ValueError):
        utc_time(datetime.datetime(2025, 1, 1))
    later = datetime.datetime(2025, 1, 1, 14, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert utc_time(later) == "2025-01-01T12:00:00+00:00"


def test_a_newer_format_version_is_refused_with_a_clear_message():
    doc = json.loads(_written())
    doc["format_version"] = "3"
    doc["reconciler_version"] = "9.0.0"
    doc["something_new"] = {}
    with pytest.raises(StateError, match=r"state.json: state format_version 3 \(written by "
                                         r"reconciler 9.0.0\) is newer .* upgrade reconciler"):
        State.from_json(json.dumps(doc), source="state.json")


@pytest.mark.parametrize("where, bad", [
    (("hashes", "Patient.PatientName"), SECRET),            # a value where a hash belongs
    (("version_after",), "v2"),
    (("datastore_id",), "NOT-AN-ID"),
    (("last_operation",), "import"),
    (("applied_at",), "2025-01-01T12:00:00+02:00"),       # not UTC
])
def test_the_schema_refuses_what_is_not_an_id_version_time_or_hash(where, bad):
    doc = json.loads(_written())
    target = doc["specs"]["s"]["image_sets"][IS1]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = bad
    with pytest.raises(StateError, match="not a valid state at specs/s/image_sets/") as caught:
        State.from_json(json.dumps(doc))
    assert bad not in str(caught.value)


def test_the_schema_refuses_unknown_keys_and_value_shaped_paths():
    doc = json.loads(_written())
    doc["specs"]["s"]["image_sets"][IS1]["hashes"]["Patient.PatientName = SMITH"] = "0" * 64
    with pytest.raises(StateError) as caught:
        State.from_json(json.dumps(doc))
    assert "SMITH" not in str(caught.value)
    doc = json.loads(_written())
    doc["specs"]["s"]["image_sets"][IS1]["PatientName"] = SECRET
    with pytest.raises(StateError, match="does not allow") as caught:
        State.from_json(json.dumps(doc))
    assert SECRET not in str(caught.value)


def test_invariants_beyond_the_schema():
    doc = json.loads(_written())
    doc["specs"]["s"]["image_sets"][IS1]["serial"] = 5
    with pytest.raises(StateError, match="newer than the state"):
        State.from_json(json.dumps(doc))
    doc = json.loads(_written())
    doc["specs"]["s"]["image_sets"][IS2] = doc["specs"]["s"]["image_sets"].pop(IS1)
    with pytest.raises(StateError, match="differs from its key"):
        State.from_json(json.dumps(doc))


def test_to_json_refuses_to_serialise_an_invalid_state():
    state = State.new()
    state.put("s", record(state, version_after="latest"))
    with pytest.raises(StateError, match="state to be written"):
        state.to_json(serial=1)


def test_not_json_is_reported_with_its_position():
    with pytest.raises(StateError, match=r"^here:1:\d+: the state is not valid JSON"):
        State.from_json("{nope", source="here")
    with pytest.raises(StateError, match="expected a JSON object"):
        State.from_json("[]")


def test_every_managed_path_form_is_accepted():
    from reconciler.spec.types import (
        Attribute, DesiredAttributes, InstanceSpec, Position, SeriesSpec)
    pos = Position("f", 1, 1)
    desired = DesiredAttributes(
        patient={"PatientName": Attribute("PatientName", "X", "PN", pos)},
        study={"StudyDescription": Attribute("StudyDescription", "X", "LO", pos)},
        series={"1.2.3": SeriesSpec("1.2.3", pos, attributes={
                    "SeriesDescription": Attribute("SeriesDescription", "X", "LO", pos)},
                    instances={"1.2.3.4": InstanceSpec("1.2.3.4", pos, attributes={
                        "00091001": Attribute("00091001", "X", "LO", pos, private=True)}),
                               "1.2.3.5": InstanceSpec("1.2.3.5", pos, absent=True)}),
                "1.2.9": SeriesSpec("1.2.9", pos, absent=True)})
    state = State.new()
    state.put("s", record(state, hashes=state.hash_values({p: "X" for p in desired.managed_paths()},
                                                           IS1)))
    again = State.from_json(state.to_json(serial=1))
    stored = again.get("s", IS1)
    # UIDs are stored as keyed tokens; the UIDs at hand (the live document's, the specs') give
    # them back.
    assert not any(uid in path for path in stored.hashes for uid in ("1.2.3", "1.2.9"))
    uids = {"1.2.3", "1.2.3.4", "1.2.3.5", "1.2.9"}
    assert set(again.resolve_paths(stored, uids).values()) == set(desired.managed_paths())
    assert all(again.matches(stored, path, "X") for path in desired.managed_paths())
    assert len(desired.managed_paths()) == 6


def test_the_schema_is_the_packaged_file():
    path = Path(__file__).parents[2] / "schemas" / "state.v1.schema.json"
    assert schema() == json.loads(path.read_text())
    assert FORMAT_VERSION in schema()["properties"]["format_version"]["enum"]


def test_puts_from_many_threads_are_all_kept():
    state = State.new()
    ids = [f"{i:032x}" for i in range(200)]
    threads = [threading.Thread(target=lambda i=i: state.put("s", record(state, i))) for i in ids]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(state) == 200


# -- the factory ---------------------------------------------------------------------------------
def test_open_backend_local_defaults_and_relative_paths(tmp_path):
    backend = open_backend(None, tmp_path)
    assert isinstance(backend, LocalBackend)
    assert backend.path == tmp_path / ".reconciler/state.json"
    assert backend.describe() == ".reconciler/state.json"
    backend = open_backend({"backend": "local", "path": "x/s.json"}, tmp_path)
    assert backend.path == tmp_path / "x/s.json"
    elsewhere = tmp_path.parent / "abs.json"
    assert open_backend({"path": str(elsewhere)}, tmp_path).describe() == str(elsewhere)


def test_open_backend_takes_the_config_modules_dataclass(tmp_path, aws_env):
    backend = open_backend(StateConfig("local", tmp_path / "a/state.json"), tmp_path)
    assert backend.describe() == "a/state.json"
    s3 = open_backend(StateConfig("s3", None, "bucket-x", "k/state.json", "eu-west-1"), tmp_path)
    assert s3.describe() == "s3://bucket-x/k/state.json"
    assert s3._client.meta.region_name == "eu-west-1"

    @dataclass
    class Custom:
        backend: str = "s3"
        bucket: str = "bucket-y"
        endpoint_url: str = "http://127.0.0.1:9"
        kms_key_id: str = "alias/state"

    custom = open_backend(Custom(), tmp_path)
    assert custom.describe() == "s3://bucket-y/reconciler/state.json"
    assert custom._client.meta.endpoint_url == "http://127.0.0.1:9"
    assert custom._encryption() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/state"}


def test_open_backend_refuses_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="unknown state backend 'gcs'"):
        open_backend({"backend": "gcs"}, tmp_path)
    with pytest.raises(ConfigError, match="needs a bucket"):
        open_backend({"backend": "s3"}, tmp_path)


def _written() -> str:
    state = State.new()
    state.put("s", record(state))
    return state.to_json(serial=1)


def test_mark_checked_keeps_the_record_serial():
    state = State.new()
    state.put("s", record(state))
    state.mark_checked("2025-02-01T00:00:00+00:00")
    state.mark_checked("2025-02-02T00:00:00+00:00", spec="s", image_set_id=IS1)
    assert state.last_checked_at == "2025-02-01T00:00:00+00:00"
    assert state.get("s", IS1).last_checked_at == "2025-02-02T00:00:00+00:00"
    assert state.get("s", IS1).serial == 1
    with pytest.raises(KeyError):
        state.mark_checked(spec="s", image_set_id=IS2)
    assert State.from_json(state.to_json(serial=1)).get("s", IS1).last_checked_at.startswith("2025-02-02")


def test_to_json_writes_exactly_what_json_dumps_of_the_document_writes():
    """to_json assembles the document from each record's kept text (a save must not cost the
    whole state): the bytes are those of json.dumps(to_dict(), sort_keys, indent=2), in every
    shape a state takes, before and after records change."""
    from reconciler.states import DriftCheckpoint, Refusal

    def plain(state: State, serial: int = 1) -> str:
        doc = state.to_dict(serial)
        return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    state = State.new()
    assert state.to_json(1) == plain(state)                       # no records at all
    state.put("ct-small", record(state))
    state.put("ct-small", record(state, IS2, version_after=None))
    state.put("fixes.0123456789ab", record(state, hashes={}))
    state.put("a-first", record(state, last_operation=OP_ROLLBACK,
                                last_checked_at="2026-01-02T03:04:05+00:00"))
    assert state.to_json(1) == plain(state)
    state.refuse("ct-small", IS1, Refusal(request="b" * 64, version="4", kind="UPDATE_FAILED"))
    state.set_drift_checkpoints({DS: DriftCheckpoint(
        through="2026-01-02T03:04:05.000001+00:00", records_serial=1,
        checked_at="2026-01-02T03:04:06+00:00", full_check_at="2026-01-02T03:04:06+00:00",
        unsettled=(IS2,))})
    state.mark_checked()
    assert state.to_json(7) == plain(state, 7)
    state.put("ct-small", record(state, version_after="5"))      # a record replaced
    state.remove("a-first")
    assert state.to_json(1) == plain(state)
    assert State.from_json(state.to_json(2)).to_json(2) == state.to_json(2)
