"""The conformance suite: what every state backend must do (each test runs on each backend)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import jsonschema
import pytest

from reconciler.core.canonical import canonical_bytes
from reconciler.core.errors import KeyUnavailableError, LockError, StateConflictError, StateError
from reconciler.states import ImageSetRecord, State

SCHEMA_PATH = Path(__file__).parents[2] / "schemas" / "state.v1.schema.json"
SECRET_NAME = "DOE^JANE-7f3a"           # a value that must never reach the stored bytes
DS, IS1, IS2, IS3 = "d" * 32, "1" * 32, "2" * 32, "3" * 32


def record(state: State, image_set_id: str, after: str = "2", values=None) -> ImageSetRecord:
    values = values if values is not None else {"Patient.PatientName": SECRET_NAME,
                                                "Study.StudyDescription": "CT CHEST",
                                                "Series[1.2.3].Instances[1.2.3.4]": None}
    return ImageSetRecord(datastore_id=DS, image_set_id=image_set_id, version_before="1",
                          version_after=after, spec_digest="e" * 64,
                          hashes=state.hash_values(values, image_set_id))


def written(store) -> State:
    backend = store.open()
    state = State.new()
    state.put("ct-chest", record(state, IS1))
    backend.write(state)
    return state


# -- reading and writing ------------------------------------------------------------------------
def test_read_of_an_empty_location_is_none(store):
    assert store.open().read() is None
    assert store.open().lock_info() is None


def test_round_trip_through_a_new_handle(store):
    backend = store.open()
    state = State.new()
    state.put("ct-chest", record(state, IS1))
    state.put("selector-spec", record(state, IS2, after="5"))
    state.put("selector-spec", record(state, IS3, after="7"))
    backend.write(state)

    again = store.open().read()
    assert again.to_dict() == state.to_dict()
    assert [(name, r.image_set_id) for name, r in again.records()] == [
        ("ct-chest", IS1), ("selector-spec", IS2), ("selector-spec", IS3)]
    assert again.get("selector-spec", IS3).version_after == "7"
    assert again.salt == state.salt
    assert again.matches(again.get("ct-chest", IS1), "Patient.PatientName", SECRET_NAME)
    assert (again.hash_value(SECRET_NAME, IS1, "Patient.PatientName")
            == state.hash_value(SECRET_NAME, IS1, "Patient.PatientName"))


def test_serial_grows_by_one_per_write_and_records_keep_theirs(store):
    backend = store.open()
    state = State.new()
    assert state.serial == 0
    state.put("ct-chest", record(state, IS1))
    for expected in (1, 2, 3):
        backend.write(state)
        assert state.serial == expected
        assert store.open().read().serial == expected
    state.put("other", record(state, IS2))
    backend.write(state)
    stored = store.open().read()
    assert stored.serial == 4
    assert stored.get("ct-chest", IS1).serial == 1 and stored.get("other", IS2).serial == 4


def test_lineage_is_fixed_and_a_second_lineage_is_refused(store):
    state = written(store)
    backend = store.open()
    read = backend.read()
    backend.write(read)
    assert store.open().read().lineage == state.lineage
    with pytest.raises(StateConflictError, match="already exists"):
        store.open().write(State.new())
    assert store.open().read().lineage == state.lineage


def test_a_lost_update_is_refused_and_nothing_is_overwritten(store):
    written(store)
    first, second = store.open(), store.open()
    mine, theirs = first.read(), second.read()
    mine.put("first", record(mine, IS2))
    theirs.put("second", record(theirs, IS3))
    first.write(mine)
    with pytest.raises(StateConflictError) as caught:
        second.write(theirs)
    message = str(caught.value)
    assert "another run" in message and "Nothing was overwritten" in message
    assert theirs.serial == 1                      # unchanged: the write did not happen
    stored = store.open().read()
    assert stored.serial == 2 and stored.spec_names() == ["ct-chest", "first"]
    # The refused snapshot is kept, with the record of what this run applied.
    errored = caught.value.errored_path
    assert errored is not None and str(errored) in message
    kept = State.from_json(errored.read_bytes())
    assert kept.serial == 2 and kept.get("second", IS3) is not None
    # Read again, redo, write: fine.
    fresh = second.read()
    fresh.put("second", record(fresh, IS3))
    second.write(fresh)
    assert store.open().read().spec_names() == ["ct-chest", "first", "second"]


def test_a_state_not_read_through_this_handle_is_checked_against_the_store(store):
    state = written(store)
    other = store.open()
    other.write(state)                              # same lineage and serial as stored: fine
    assert store.open().read().serial == 2
    with pytest.raises(StateConflictError):
        store.open().write(State.from_json(state.to_json(serial=1)))


# -- locking -------------------------------------------------------------------------------------
def test_the_lock_is_exclusive_and_names_its_holder(store):
    holder, other = store.open(), store.open()
    with holder.lock("apply", timeout=1) as info:
        assert store.open().lock_info() == info
        started = time.monotonic()
        with pytest.raises(LockError) as caught:
            with other.lock("apply", timeout=0.3):
                pytest.fail("two holders")
        assert time.monotonic() - started >= 0.3
        message = str(caught.value)
        for part in (info.who, info.host, f"pid {info.pid}", "'apply'", info.since, info.id,
                     holder.describe()):
            assert part in message
        assert caught.value.holder == info


def test_the_lock_is_released_on_exit_and_on_an_exception(store):
    backend = store.open()
    with backend.lock("apply"):
        pass
    assert store.open().lock_info() is None
    with pytest.raises(RuntimeError):
        with backend.lock("apply"):
            raise RuntimeError("boom")
    assert store.open().lock_info() is None
    assert store.raw(".lock") is None
    with store.open().lock("apply", timeout=0):   # free for anyone
        pass


def test_a_waiter_gets_the_lock_once_it_is_released(store):
    import threading
    holder = store.open()
    acquired = threading.Event()
    release = threading.Event()

    def hold():
        with holder.lock("apply"):
            acquired.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    acquired.wait(5)
    threading.Timer(0.2, release.set).start()
    with store.open().lock("plan", timeout=5) as info:
        assert info.operation == "plan"
    thread.join()


def test_unlock_without_force_refuses_a_live_holder(store):
    holder = store.open()
    with holder.lock("apply") as info:
        with pytest.raises(LockError, match="--force") as caught:
            store.open().unlock()
        assert info.id in str(caught.value)
        assert store.open().lock_info() == info


def test_unlock_of_our_own_lock_and_of_no_lock(store):
    backend = store.open()
    assert backend.unlock() is None
    with backend.lock("apply") as info:
        assert backend.unlock() == info
        assert store.open().lock_info() is None


def test_unlock_force_breaks_the_lock_and_the_old_holder_leaves_the_new_one_alone(store, caplog):
    old, breaker, newcomer = store.open(), store.open(), store.open()
    old_lock = old.lock("apply")
    info = old_lock.__enter__()
    with pytest.raises(LockError, match="not by lock id"):
        breaker.unlock(force=True, lock_id="not-the-id")
    assert breaker.unlock(force=True, lock_id=info.id) == info
    assert store.open().lock_info() is None
    with newcomer.lock("apply", timeout=0) as new_info:
        with caplog.at_level(logging.WARNING):
            old_lock.__exit__(None, None, None)       # the old run ends while the new one holds
        assert "was broken" in caplog.text
        assert store.open().lock_info() == new_info
    assert store.open().lock_info() is None


# -- what is stored ------------------------------------------------------------------------------
def test_what_is_stored_validates_against_the_schema_file_and_is_deterministic(store):
    written(store)
    raw = store.raw("")
    doc = json.loads(raw)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)
    assert raw.decode() == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert doc["format_version"] == "2" and doc["serial"] == 1


def test_no_metadata_value_reaches_storage(store):
    state = written(store)
    backend = store.open()
    with backend.lock("apply"):
        lock_bytes = store.raw(".lock")
        read = backend.read()
        backend.write(read)
    secret = SECRET_NAME.encode()
    unsalted = hashlib.sha256(canonical_bytes(SECRET_NAME)).hexdigest().encode()
    for blob in (store.raw(""), store.raw(".backup") or b"", lock_bytes):
        assert secret not in blob and b"DOE" not in blob and b"CT CHEST" not in blob
        assert unsalted not in blob
    assert state.hash_value(SECRET_NAME, IS1, "Patient.PatientName").encode() in store.raw("")


def test_errors_name_the_location_and_not_values(store):
    written(store)
    backend = store.open()
    stale = backend.read()
    store.open().write(store.open().read())
    stale.put("ct-chest", record(stale, IS1, values={"Patient.PatientName": SECRET_NAME}))
    with pytest.raises(StateError) as caught:
        backend.write(stale)
    assert backend.describe() in str(caught.value)
    assert SECRET_NAME not in str(caught.value)


# -- keys: every backend, every kind of key source ------------------------------------------------
VALUES = {"Patient.PatientName": SECRET_NAME, "Study.StudyDescription": "CT CHEST",
          "Series[1.2.3].Instances[1.2.3.4]": None}


def _answers(state: State) -> list[bool]:
    record_ = state.get("ct-chest", IS1)
    return [state.matches(record_, path, value) for path, value in VALUES.items()] + [
        state.matches(record_, "Patient.PatientName", "DOE^JOHN")]


def _legacy_state() -> bytes:
    """A state as format 1 wrote it: sha256(salt + canonical JSON), UIDs and digest in clear."""
    salt = "00112233445566778899aabbccddeeff"
    hashes = {path: hashlib.sha256(bytes.fromhex(salt) + canonical_bytes(value)).hexdigest()
              for path, value in VALUES.items()}
    doc = {"format_version": "1", "lineage": "6f1c1f0e-3b7a-4c55-9d0e-2a4b6c8d0e1f", "serial": 1,
           "salt": salt, "reconciler_version": "0.1.0", "last_checked_at": None,
           "specs": {"ct-chest": {"image_sets": {IS1: {
               "datastore_id": DS, "image_set_id": IS1, "version_before": "1",
               "version_after": "2", "applied_at": "2025-01-31T12:00:00+00:00",
               "spec_digest": "e" * 64, "serial": 1, "last_operation": "apply",
               "last_checked_at": None, "hashes": hashes}}}},
           "refusals": {"ct-chest": {IS2: {"request": hashes["Patient.PatientName"],
                                           "version": "3", "kind": "UPDATE_FAILED",
                                           "at": "2025-01-31T12:00:00+00:00"}}}}
    return json.dumps(doc, sort_keys=True, indent=2).encode()


def _leftovers(blob: bytes, old: bytes) -> list[str]:
    """Hashes, UIDs and digests of ``old`` (a stored state) that are still in ``blob``."""
    doc = json.loads(old)
    record_ = doc["specs"]["ct-chest"]["image_sets"][IS1]
    olds = [*record_["hashes"].values(), record_["spec_digest"], "1.2.3.4", "[1.2.3]"]
    return [o for o in olds if o.encode() in blob]


def test_a_keyed_state_opens_only_with_its_key(store, key_sources):
    backend = store.open(key_sources("a"))
    state = backend.new_state()
    state.put("ct-chest", record(state, IS1, values=VALUES))
    backend.write(state)
    stored = store.raw("")
    assert json.loads(stored)["keys"]["data_key"]["source"] in ("file", "env", "kms")
    assert _answers(store.open(key_sources("a")).read()) == [True, True, True, False]
    other = store.open(key_sources("b")).read()
    assert len(other) == 1                       # ids and versions without the key …
    with pytest.raises(KeyUnavailableError, match=f"the state {backend.describe()}"):
        other.open_keys()
    with pytest.raises(KeyUnavailableError):     # … and no answer, true or false, without it
        other.matches(other.get("ct-chest", IS1), "Patient.PatientName", SECRET_NAME)
    assert store.raw("") == stored               # nothing written


def test_a_format_1_state_is_re_keyed_by_the_next_write(store, key_sources, caplog):
    legacy = _legacy_state()
    store.put("", legacy)
    backend = store.open(key_sources("a"))
    state = backend.read()
    with caplog.at_level(logging.WARNING):
        state.open_keys()
    assert "holds salted hashes that are not keyed" in caplog.text
    assert _answers(state) == [True, True, True, False]
    # The refusal (format 1 kept sha256(salt + canonical JSON of the request)) is re-keyed
    # too: the very same request is still known as refused.
    assert state.refusal("ct-chest", IS2).request == state.request_hash(SECRET_NAME, IS2)
    assert state.refusal("ct-chest", IS2).request != state.request_hash("other", IS2)
    backend.write(state)
    stored = store.raw("")
    assert json.loads(stored)["format_version"] == "2"
    for blob in (stored, store.raw(".backup") or b""):
        assert _leftovers(blob, legacy) == []
    assert _answers(store.open(key_sources("a")).read()) == [True, True, True, False]


def test_rekey_keeps_every_answer_and_leaves_no_earlier_hash(store, key_sources):
    backend = store.open(key_sources("a"))
    state = backend.new_state()
    state.put("ct-chest", record(state, IS1, values=VALUES))
    backend.write(state)
    before = store.raw("")
    state = store.open(key_sources("a")).read()
    state.rekey(key_sources("b"))                # rotate, and move to another key
    store.open(key_sources("b")).write(state)
    after = store.raw("")
    assert json.loads(after)["keys"]["generation"] == 2
    for blob in (after, store.raw(".backup") or b""):
        assert _leftovers(blob, before) == []
    assert _answers(store.open(key_sources("b")).read()) == [True, True, True, False]
    with pytest.raises(KeyUnavailableError):
        store.open(key_sources("a")).read().open_keys()
