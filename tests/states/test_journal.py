"""The local state's journal: a save appends the changed records, a read replays them, the end
of the lock compacts them into the snapshot; torn appends, damage, conflicts, stale journals
and migrations. States here are small, so the size from which saves are journaled is 0 and
the journal may grow to 100 times the snapshot (unless a test says otherwise)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest

from reconciler.core.errors import StateConflictError, StateError
from reconciler.states import DriftCheckpoint, ImageSetRecord, Refusal, State, open_backend
from reconciler.states.local import LocalBackend

from .conftest import spawn
from .test_conformance import _legacy_state

DS = "d" * 32
IDS = [f"{i:032x}" for i in range(1, 9)]


def _open(tmp_path: Path, journal: bool = True) -> LocalBackend:
    backend = open_backend({"backend": "local", "path": "project/.reconciler/state.json"}, tmp_path)
    backend.poll_interval, backend.max_poll_interval = 0.01, 0.05
    if journal:       # tiny states: every save journaled, compacted only by the lock's end
        backend.journal_min_bytes, backend.journal_ratio = 0, 100.0
    return backend


@pytest.fixture
def backend(tmp_path, monkeypatch) -> LocalBackend:
    monkeypatch.chdir(tmp_path)
    return _open(tmp_path)


def _record(state: State, isid: str, after: str = "2", **extra) -> ImageSetRecord:
    return ImageSetRecord(DS, isid, "1", after, "a" * 64,
                          hashes=state.hash_values({"Study.StudyID": isid[-4:]}, isid), **extra)


def _lines(backend: LocalBackend) -> list[dict]:
    return [json.loads(line.split(b" ", 1)[1]) for line in backend.journal_path.read_bytes().splitlines()]


def _started(backend: LocalBackend, n: int = 3) -> State:
    state = State.new()
    for isid in IDS[:n]:
        state.put("ct", _record(state, isid))
    backend.write(state)
    return state


def test_a_save_appends_only_the_records_it_changed(backend, tmp_path):
    state = _started(backend)
    snapshot = backend.path.read_bytes()
    header = _lines(backend)
    assert header == [{"journal": "1", "lineage": state.lineage, "base_serial": 1,
                       "snapshot_sha256": header[0]["snapshot_sha256"]}]
    state.put("ct", _record(state, IDS[1], after="3"))
    backend.write(state)
    assert backend.path.read_bytes() == snapshot             # the snapshot is not rewritten
    entries = _lines(backend)[1:]
    assert [(e["serial"], [p[:2] for p in e["put"]], e["gone"]) for e in entries] == [
        (2, [["ct", IDS[1]]], [])]
    again = _open(tmp_path).read()
    assert again.serial == 2 and again.to_dict() == state.to_dict()
    assert again.get("ct", IDS[1]).version_after == "3" and again.get("ct", IDS[1]).serial == 2


def test_replay_gives_back_every_kind_of_change(backend, tmp_path):
    state = _started(backend, 5)
    state.put("mr", _record(state, IDS[5], peer_of=IDS[0]))
    backend.write(state)
    state.remove("ct", IDS[4])
    state.rename("ct", "ct-chest", IDS[3])
    state.refuse("ct", IDS[0], Refusal(request="b" * 64, version="2", kind="UPDATE_FAILED"))
    backend.write(state)
    state.mark_checked("2025-02-01T06:00:00+00:00", "ct", IDS[2])
    state.mark_checked("2025-02-01T06:00:00+00:00")
    state.set_drift_checkpoints({DS: DriftCheckpoint("2025-02-01T05:59:59.123456+00:00", 3,
                                                     "2025-02-01T06:00:00+00:00",
                                                     "2025-02-01T06:00:00+00:00", (IDS[1],))})
    backend.write(state)
    state.remove("mr")
    state.forgive("ct", IDS[0])
    backend.write(state)
    assert [e["serial"] for e in _lines(backend)[1:]] == [2, 3, 4, 5]
    assert _open(tmp_path).read().to_dict() == state.to_dict()


def test_the_end_of_the_lock_compacts_the_journal_and_keeps_the_snapshot_before(backend, tmp_path):
    _started(backend)
    before = backend.path.read_bytes()
    with backend.lock("apply"):
        state = backend.read()
        for after in ("3", "4", "5"):
            state.put("ct", _record(state, IDS[0], after=after))
            backend.write(state)
        assert len(_lines(backend)) == 4                     # header and three entries
        assert json.loads(backend.path.read_bytes())["serial"] == 1
    assert len(_lines(backend)) == 1 and _lines(backend)[0]["base_serial"] == 4
    stored = json.loads(backend.path.read_bytes())
    assert stored["serial"] == 4 and stored == state.to_dict()
    assert backend.backup_path.read_bytes() == before        # the state before the run
    assert _open(tmp_path).read().to_dict() == state.to_dict()


def test_unsaved_changes_are_not_compacted_and_the_journal_stays_whole(backend, tmp_path):
    _started(backend)
    with backend.lock("apply"):
        state = backend.read()
        state.put("ct", _record(state, IDS[0], after="3"))
        backend.write(state)
        state.put("ct", _record(state, IDS[1], after="9"))   # never saved (a failed run)
    assert len(_lines(backend)) == 2
    read = _open(tmp_path).read()
    assert read.serial == 2 and read.get("ct", IDS[1]).version_after == "2"


def test_the_journal_is_compacted_once_it_outgrows_the_snapshot(backend, tmp_path):
    state = _started(backend, 1)
    backend.journal_ratio = 3.0
    sizes = []
    for n in range(2, 22):
        state.put("ct", _record(state, IDS[0], after=str(n)))
        backend.write(state)
        sizes.append(backend.journal_path.stat().st_size)
        assert backend.journal_path.stat().st_size <= backend.path.stat().st_size * 3.0
    assert any(b < a for a, b in zip(sizes, sizes[1:]))      # compacted at least once
    assert _open(tmp_path).read().to_dict() == state.to_dict()


def test_a_torn_last_line_is_ignored_by_readers_and_cut_by_the_next_writer(backend, tmp_path):
    state = _started(backend)
    state.put("ct", _record(state, IDS[0], after="3"))
    backend.write(state)
    whole = backend.journal_path.read_bytes()
    state.put("ct", _record(state, IDS[0], after="4"))
    with backend.journal_path.open("ab") as handle:       # what a crash mid-append leaves
        handle.write(whole.splitlines(keepends=True)[-1][:70])
    assert _open(tmp_path).read().serial == 2
    # A whole last line whose checksum fails is torn too.
    backend.journal_path.write_bytes(whole + b"0" * 64 + b' {"serial": 3}\n')
    assert _open(tmp_path).read().serial == 2
    other = _open(tmp_path)
    fresh = other.read()
    fresh.put("ct", _record(fresh, IDS[2], after="7"))
    other.write(fresh)
    assert backend.journal_path.read_bytes().startswith(whole)
    assert [e["serial"] for e in _lines(backend)[1:]] == [2, 3]
    assert _open(tmp_path).read().get("ct", IDS[2]).version_after == "7"


def test_a_crash_mid_append_loses_nothing_acknowledged(backend, tmp_path):
    state = _started(backend)
    state.put("ct", _record(state, IDS[0], after="3"))
    backend.write(state)                                     # acknowledged: serial 2
    worker = spawn("crash-mid-append", {"backend": "local", "path": str(backend.path)}, cwd=tmp_path)
    out, err = worker.communicate(timeout=15)
    assert worker.returncode == -signal.SIGKILL, err
    assert "NOT REACHED" not in out
    assert not backend.journal_path.read_bytes().endswith(b"\n")     # torn, on disk
    read = _open(tmp_path).read()
    assert read.serial == 2 and read.to_dict() == state.to_dict()
    read.put("ct", _record(read, IDS[1], after="5"))
    _open(tmp_path).write(read)
    assert _open(tmp_path).read().get("ct", IDS[1]).version_after == "5"


def test_damage_before_the_last_line_is_refused_naming_the_line(backend, tmp_path):
    state = _started(backend)
    for after in ("3", "4"):
        state.put("ct", _record(state, IDS[0], after=after))
        backend.write(state)
    lines = backend.journal_path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"3"', b'"8"')
    backend.journal_path.write_bytes(b"".join(lines))
    with pytest.raises(StateError, match=r"line 2 of the journal is damaged"):
        _open(tmp_path).read()
    with pytest.raises(StateError, match="refusing to overwrite"):
        _open(tmp_path).write(state)


def test_a_lost_update_is_refused_with_a_journal_and_nothing_is_appended(backend, tmp_path):
    _started(backend)
    first, second = _open(tmp_path), _open(tmp_path)
    mine, theirs = first.read(), second.read()
    mine.put("ct", _record(mine, IDS[0], after="3"))
    first.write(mine)
    journal = backend.journal_path.read_bytes()
    theirs.put("ct", _record(theirs, IDS[1], after="4"))
    with pytest.raises(StateConflictError, match="another run") as caught:
        second.write(theirs)
    assert backend.journal_path.read_bytes() == journal
    kept = State.from_json(caught.value.errored_path.read_bytes())   # the full snapshot
    assert kept.serial == 2 and kept.get("ct", IDS[1]).version_after == "4"
    # and the other way round: a handle that wrote last notices an append it did not make
    again = second.read()
    again.put("ct", _record(again, IDS[2], after="6"))
    second.write(again)
    mine.put("ct", _record(mine, IDS[2], after="7"))
    with pytest.raises(StateConflictError):
        first.write(mine)
    assert _open(tmp_path).read().get("ct", IDS[2]).version_after == "6"


def test_a_snapshot_put_in_place_by_hand_makes_the_journal_stale(backend, tmp_path):
    state = _started(backend)
    with backend.lock("apply"):
        state.put("ct", _record(state, IDS[0], after="3"))
        backend.write(state)                                 # serial 2, compacted at the end
    older = backend.backup_path.read_bytes()                 # serial 1
    state.put("ct", _record(state, IDS[0], after="4"))
    backend.write(state)                                     # serial 3, journaled on 2
    backend.path.write_bytes(older)                          # "restore the backup"
    read = _open(tmp_path).read()
    assert read.serial == 1 and read.get("ct", IDS[0]).version_after == "2"
    writer = _open(tmp_path)
    state = writer.read()
    state.put("ct", _record(state, IDS[1], after="9"))
    writer.write(state)                                      # full: the stale journal replaced
    assert json.loads(backend.path.read_bytes())["serial"] == 2
    assert _lines(backend)[0]["base_serial"] == 2 and len(_lines(backend)) == 1


def test_a_snapshot_edited_by_hand_is_validated_in_full(backend, tmp_path):
    _started(backend)
    doc = json.loads(backend.path.read_bytes())
    doc["specs"]["ct"]["image_sets"][IDS[1]]["hashes"]["Study.StudyID"] = "DOE^JANE"
    backend.path.write_text(json.dumps(doc, sort_keys=True, indent=2))
    with pytest.raises(StateError) as caught:
        _open(tmp_path).read()
    message = str(caught.value)
    assert f"specs/ct/image_sets/{IDS[1]}/hashes/Study.StudyID" in message and "pattern" in message
    assert "DOE" not in message


def test_a_format_1_state_is_written_in_full_as_format_2_then_journaled(backend, tmp_path, caplog):
    backend.path.parent.mkdir(parents=True, mode=0o700)
    backend.path.write_bytes(_legacy_state())
    state = backend.read()
    with caplog.at_level(logging.WARNING):
        state.open_keys()
    backend.write(state)
    assert json.loads(backend.path.read_bytes())["format_version"] == "2"
    assert len(_lines(backend)) == 1                         # full: no entry
    state.put("ct-chest", _record(state, IDS[3]))
    backend.write(state)
    assert len(_lines(backend)) == 2
    assert _open(tmp_path).read().to_dict() == state.to_dict()


def test_a_rekey_is_a_full_write_and_no_earlier_hash_stays_beside_it(backend, tmp_path):
    state = _started(backend)
    state.put("ct", _record(state, IDS[0], after="3"))
    backend.write(state)
    old = state.get("ct", IDS[1]).hashes["Study.StudyID"].encode()
    state.rekey()
    backend.write(state)
    assert len(_lines(backend)) == 1
    for name in (backend.path, backend.backup_path, backend.journal_path):
        assert old not in name.read_bytes()
    assert _open(tmp_path).read().to_dict() == state.to_dict()


def test_small_states_are_written_in_full_without_a_journal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = _open(tmp_path, journal=False)
    state = _started(backend)
    state.put("ct", _record(state, IDS[0], after="3"))
    backend.write(state)
    assert not backend.journal_path.exists()
    assert json.loads(backend.path.read_bytes())["serial"] == 2


def test_state_list_prints_a_journaled_state_as_before(backend, tmp_path):
    from click.testing import CliRunner

    from reconciler.cli import cli

    state = _started(backend, 2)
    with backend.lock("apply"):
        state.put("mr", _record(state, IDS[4], peer_of=IDS[0]))
        state.put("ct", ImageSetRecord(DS, IDS[1], "6", None, "a" * 64))      # pending
        backend.write(state)
        assert len(_lines(backend)) == 2
        (tmp_path / "reconciler.yaml").write_text(
            "state:\n  backend: local\n  path: project/.reconciler/state.json\n")
        result = CliRunner().invoke(cli, ["--config", str(tmp_path / "reconciler.yaml"),
                                          "state", "list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = {isid: state.get(name, isid) for name, isid in (("ct", IDS[0]), ("ct", IDS[1]), ("mr", IDS[4]))}
    assert result.output == (
        f"ct\t{IDS[0]}\tversion 2\tapply {r[IDS[0]].applied_at}\n"
        f"ct\t{IDS[1]}\tpending write on version 6\tapply {r[IDS[1]].applied_at}\n"
        f"mr\t{IDS[4]}\tversion 2\tapply {r[IDS[4]].applied_at}\tpeer of {IDS[0]}\n")
