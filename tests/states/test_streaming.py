"""The state's memory at scale: full writes streamed in pieces (never one string), record
texts kept only for the backend that rewrites the whole object at every save (S3), and the
records read back compact (slots, shared strings) yet equal to what was written."""

from __future__ import annotations

import hashlib
import json

import pytest

from reconciler.states import DriftCheckpoint, ImageSetRecord, Refusal, State, open_backend
from reconciler.states import journal
from reconciler.states.journal import parse

from .test_journal import _open

DS = "d" * 32


def _rec(state: State, i: int, **extra) -> ImageSetRecord:
    isid = f"{i:032x}"
    extra.setdefault("applied_at", "2026-01-02T03:04:05+00:00")
    return ImageSetRecord(DS, isid, "1", "2", "a" * 64,
                          hashes=state.hash_values({"Study.StudyID": str(i), "Patient.PatientName": "X"},
                                                   isid), **extra)


def _state(n: int = 30) -> State:
    """Several specs (one of many records), optional fields, a refusal, a drift checkpoint."""
    state = State.new()
    for i in range(1, n + 1):
        extra = {"version_origin": "1"} if i % 3 == 0 else {"peer_of": f"{1:032x}"} if i % 5 == 0 else {}
        state.put("big" if i % 2 else f"spec-{i:03d}", _rec(state, i, **extra))
    state.refuse("big", f"{1:032x}", Refusal(request="c" * 64, version="2", kind="UPDATE_FAILED",
                                             at="2026-01-02T03:04:05+00:00"))
    state.set_drift_checkpoints({DS: DriftCheckpoint(through="2026-01-02T03:04:05.000001+00:00",
                                                     records_serial=1, checked_at="2026-01-02T03:04:05+00:00",
                                                     full_check_at="2026-01-02T03:04:05+00:00",
                                                     unsettled=(f"{2:032x}",))})
    return state


def _dumped(state: State, serial: int | None = None) -> str:
    return json.dumps(state.to_dict(serial), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("n", [0, 1, 30, 2000])
def test_the_pieces_join_to_exactly_what_json_dumps_writes(n):
    state = _state(n) if n else State.new()
    pieces = list(state.chunks(7))
    assert "".join(pieces) == _dumped(state, 7) == state.to_json(7)
    if n == 2000:              # ~1.5 MB: written in pieces of about 64 KB, not one string
        assert len(pieces) > 10 and max(map(len, pieces)) < (1 << 16) + 4096


def test_a_state_that_would_not_validate_fails_before_the_first_piece():
    state = _state(3)
    bad = _rec(state, 99)
    object.__setattr__(bad, "hashes", {"Study.StudyID": "SMITH^JOHN"})    # a value, not a hash
    state.put("big", bad)
    with pytest.raises(Exception, match="not a valid state"):
        state.chunks()


def test_a_full_local_write_is_streamed_byte_identical_and_its_digest_is_the_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = _open(tmp_path)
    state = _state(200)
    monkeypatch.setattr(State, "to_json", lambda *a, **k: pytest.fail("the whole text was made"))
    backend.write(state)                                   # the first write: full
    data = backend.path.read_bytes()
    assert data.decode("utf-8") == _dumped(state)
    header = parse(backend.journal_path.read_bytes(), "journal")
    assert header.snapshot_sha256 == hashlib.sha256(data).hexdigest()
    with backend.lock("apply"):                            # a journaled save, then compaction
        state.put("big", _rec(state, 999))
        backend.write(state)
    assert backend.path.read_bytes().decode("utf-8") == _dumped(state)
    assert state._texts == {}                              # nothing kept for the next write


def test_a_rekeyed_states_backup_is_the_new_snapshot_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = _open(tmp_path)
    state = _state(10)
    backend.write(state)
    state.rekey()                                          # a full write, new keys
    backend.write(state)
    assert backend.backup_path.read_bytes() == backend.path.read_bytes() == _dumped(state).encode()


def test_s3_puts_the_whole_body_and_keeps_record_texts_for_the_next_save(s3):
    backend = s3.open()
    state = _state(20)
    backend.write(state)
    assert s3.raw() == _dumped(state).encode("utf-8")
    assert len(state._texts) == 20
    state.put("big", _rec(state, 1, version_origin="1"))
    backend.write(state)
    assert s3.raw() == _dumped(state).encode("utf-8")
    assert State.from_json(s3.raw()).records() == state.records()


def test_records_read_back_equal_the_originals_and_share_their_repeated_strings(tmp_path):
    state = _state(30)
    again = State.from_json(state.to_json(1))
    assert again.records() == [(name, rec.__class__(**{**_fields(rec), "serial": rec.serial}))
                               for name, rec in state.records()]
    assert [r.to_dict() for _, r in again.records()] == [r.to_dict() for _, r in state.records()]
    (_, one), (_, two) = again.records("big")[:2]
    assert one.datastore_id is two.datastore_id and one.applied_at is two.applied_at
    assert one.spec_digest is two.spec_digest
    assert not hasattr(one, "__dict__")                    # slots: no dict per record
    with pytest.raises(AttributeError):
        one.version_after = "3"                            # still immutable


def _fields(rec: ImageSetRecord) -> dict:
    return {name: getattr(rec, name) for name in rec.__dataclass_fields__}


def test_records_put_share_their_repeated_strings():
    state = State.new()
    a = state.put("s", _rec(state, 1, applied_at="".join(["2026-01-02T03:04:05", "+00:00"])))
    b = state.put("s", _rec(state, 2, applied_at="".join(["2026-01-02T03:04:05", "+00:00"])))
    assert a.applied_at is b.applied_at and a.datastore_id is b.datastore_id


def _bad(state: State, i: int) -> ImageSetRecord:
    bad = _rec(state, i)
    object.__setattr__(bad, "hashes", {"Study.StudyID": "SMITH^JOHN"})    # a value, not a hash
    return bad


@pytest.mark.parametrize("journaled", [True, False])
def test_a_state_read_back_still_validates_what_is_put_into_it(tmp_path, monkeypatch, journaled):
    monkeypatch.chdir(tmp_path)
    _open(tmp_path, journal=journaled).write(_state(10))
    backend = _open(tmp_path, journal=journaled)
    state = backend.read()
    state.put("big", _bad(state, 3))
    with pytest.raises(Exception, match="not a valid state at specs/big/image_sets/"):
        backend.write(state)
    assert "SMITH" not in backend.path.read_text()
    view = backend.read().copy()             # a copy validates every record it holds
    view._specs["big"][f"{1:032x}"] = _bad(view, 1)
    with pytest.raises(Exception, match="not a valid state"):
        view.to_json(99)


def test_a_snapshot_its_writer_validated_is_read_record_by_record_as_parsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = _open(tmp_path)
    written = _state(40)
    backend.write(written)
    made = []
    real = ImageSetRecord.from_valid.__func__

    def spy(cls, doc, image_set_id=None):
        made.append(image_set_id)               # None: made by the parse's hook
        return real(cls, doc, image_set_id)
    monkeypatch.setattr(ImageSetRecord, "from_valid", classmethod(spy))
    again = _open(tmp_path).read()
    assert made == [None] * 40                 # every record made as it was parsed
    assert [(n, r.to_dict()) for n, r in again.records()] == \
        [(n, r.to_dict()) for n, r in written.records()]
    name, one = again.records()[0]
    assert next(k for k in again._specs[name] if k == one.image_set_id) is one.image_set_id


def test_a_journal_naming_the_snapshots_bytes_but_another_serial_does_not_spare_validation(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = _open(tmp_path)
    backend.write(_state(5))
    data = backend.path.read_bytes()
    doc = json.loads(data)
    doc["specs"]["big"]["image_sets"][f"{1:032x}"]["hashes"] = {"Study.StudyID": "SMITH^JOHN"}
    text = json.dumps(doc, indent=2, sort_keys=True).encode()
    backend.path.write_bytes(text)
    # The journal names these very bytes, yet extends another serial: never written so.
    backend.journal_path.write_bytes(journal.header(doc["lineage"], 7, hashlib.sha256(text).hexdigest()))
    with pytest.raises(Exception, match="not a valid state at specs/big/image_sets/"):
        _open(tmp_path).read()
