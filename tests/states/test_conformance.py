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
from reconciler.core.errors import LockError, StateConflictError, StateError
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
