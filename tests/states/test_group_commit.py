"""Group commit of the state (reconciler.engine.operations.GroupCommit): many apply workers save at once;
none goes on before its own change is on disk, and changes made while a write is under way
share the next write instead of queueing one write each."""

import threading
import time

from reconciler.engine.operations import GroupCommit
from reconciler.states import ImageSetRecord, State
from reconciler.states.local import LocalBackend

WORKERS = 24


class SlowDisk(LocalBackend):
    """The real local backend, with every write taking a little longer (a slow disk), and a
    count of the writes."""

    writes = 0

    def write(self, state):
        time.sleep(0.02)
        super().write(state)
        self.writes += 1


def _record(n: int) -> ImageSetRecord:
    image_set_id = f"{n:032x}"
    return ImageSetRecord("d" * 32, image_set_id, "1", "2", "0" * 64, {})


def test_every_worker_returns_only_once_its_change_is_on_disk(tmp_path):
    path = tmp_path / "state.json"
    backend = SlowDisk(path)
    state = State.new()
    saver = GroupCommit(state, backend)
    seen_on_disk: dict[int, bool] = {}
    start = threading.Barrier(WORKERS)

    def worker(n: int) -> None:
        start.wait()
        state.put("fleet", _record(n))
        saver.save()
        on_disk = State.from_json(path.read_text())     # what a crash right now would keep
        seen_on_disk[n] = on_disk.get("fleet", _record(n).image_set_id) is not None

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen_on_disk == {n: True for n in range(WORKERS)}
    assert len(State.from_json(path.read_text())) == WORKERS
    # Workers that changed the state while a write was under way shared the next one.
    assert 1 <= backend.writes < WORKERS
    # And no write held nothing new: every serial the run took has a record stamped with it
    # (a worker whose change an earlier write already held does not write again).
    final = State.from_json(path.read_text())
    assert {record.serial for _, record in final.records()} == set(range(1, final.serial + 1))


def test_one_worker_alone_writes_once_per_change(tmp_path):
    backend = SlowDisk(tmp_path / "state.json")
    state = State.new()
    saver = GroupCommit(state, backend)
    for n in range(3):
        state.put("fleet", _record(n))
        saver.save()
    assert backend.writes == 3
    assert State.from_json((tmp_path / "state.json").read_text()).serial == 3


def test_a_save_with_nothing_changed_writes_nothing(tmp_path):
    backend = SlowDisk(tmp_path / "state.json")
    state = State.new()
    saver = GroupCommit(state, backend)
    state.put("fleet", _record(0))
    saver.save()
    saver.save()
    assert backend.writes == 1 and not state.unsaved
    assert state.forgive("fleet", _record(0).image_set_id) is False   # nothing to forget
    saver.save()
    assert backend.writes == 1
