"""What only the local file backend does: file modes, backup, atomic replace, stale locks of
dead processes, the errored file."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from reconciler.core.errors import LockError, StateError
from reconciler.states import ImageSetRecord, State, files, open_backend
from reconciler.states.local import LocalBackend
from reconciler.states.locking import CREATION_GRACE

from .conftest import spawn

IS1 = "1" * 32


@pytest.fixture
def backend(tmp_path, monkeypatch) -> LocalBackend:
    monkeypatch.chdir(tmp_path)
    return _open(tmp_path)


def _open(tmp_path: Path) -> LocalBackend:
    found = open_backend({"backend": "local", "path": "project/.reconciler/state.json"}, tmp_path)
    found.poll_interval, found.max_poll_interval = 0.01, 0.05
    return found


def _config(backend: LocalBackend) -> dict:
    return {"backend": "local", "path": str(backend.path)}


def _state_with_record() -> State:
    state = State.new()
    state.put("s", ImageSetRecord("d" * 32, IS1, "1", "2", "a" * 64,
                                  hashes=state.hash_values({"Study.StudyID": "42"}, IS1)))
    return state


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_directory_0700_and_files_0600_whatever_the_umask(backend):
    old = os.umask(0)
    try:
        state = _state_with_record()
        backend.write(state)
        backend.write(state)
        with backend.lock("apply"):
            assert _mode(backend.lock_path) == 0o600
    finally:
        os.umask(old)
    assert _mode(backend.path.parent) == 0o700
    assert _mode(backend.path) == 0o600 and _mode(backend.backup_path) == 0o600


def test_the_previous_snapshot_is_kept_as_the_backup(backend):
    state = _state_with_record()
    backend.write(state)
    assert not backend.backup_path.exists()
    backend.write(state)
    assert json.loads(backend.backup_path.read_text())["serial"] == 1
    backend.write(state)
    assert json.loads(backend.backup_path.read_text())["serial"] == 2
    assert State.from_json(backend.backup_path.read_bytes()).get("s", IS1) is not None


def test_a_crash_between_temp_write_and_rename_leaves_the_old_state_intact(backend, tmp_path):
    state = _state_with_record()
    backend.write(state)
    before = backend.path.read_bytes()
    worker = spawn("crash-before-rename", _config(backend), cwd=tmp_path)
    out, err = worker.communicate(timeout=15)
    assert worker.returncode == -signal.SIGKILL, err
    assert "NOT REACHED" not in out
    leftovers = list(backend.path.parent.glob(".state.json.*.tmp"))
    assert len(leftovers) == 1 and json.loads(leftovers[0].read_text())["serial"] == 2
    assert backend.path.read_bytes() == before
    assert _open(tmp_path).read().serial == 1
    backend.write(backend.read())                    # the next write goes through and tidies up
    assert _open(tmp_path).read().serial == 2
    assert not list(backend.path.parent.glob(".state.json.*.tmp"))


def test_a_lock_left_by_a_killed_process_is_taken_over(backend, tmp_path):
    holder = spawn("hold", _config(backend), cwd=tmp_path)
    try:
        line = holder.stdout.readline()
        assert line.startswith("LOCKED "), holder.stderr.read()
        with pytest.raises(LockError, match=f"pid {holder.pid}"):
            with backend.lock("apply", timeout=0.2):
                pass
        assert backend.lock_is_stale() is False
        with pytest.raises(LockError, match="--force"):
            backend.unlock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert backend.lock_info().pid == holder.pid     # the file is still there …
    assert backend.lock_is_stale() is True           # … but nobody holds it
    with backend.lock("apply", timeout=1) as info:
        assert backend.lock_info() == info and info.pid == os.getpid()
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            with _open(tmp_path).lock("apply", timeout=0.1):
                pass
    assert backend.lock_info() is None


def test_unlock_without_force_removes_a_stale_lock(backend, tmp_path):
    holder = spawn("hold", _config(backend), cwd=tmp_path)
    assert holder.stdout.readline().startswith("LOCKED ")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert backend.unlock().pid == holder.pid
    assert backend.lock_info() is None


def test_a_live_holder_that_ends_normally_releases_for_a_waiter(backend, tmp_path):
    holder = spawn("hold", _config(backend), cwd=tmp_path)
    assert holder.stdout.readline().startswith("LOCKED ")
    holder.stdin.close()                             # the holder finishes in a moment
    with backend.lock("apply", timeout=10) as info:
        assert info.pid == os.getpid()
    assert holder.wait(10) == 0


def test_an_empty_lock_file_is_a_lock_being_created_until_it_is_old(backend):
    files.ensure_dir(backend.lock_path.parent)
    backend.lock_path.write_bytes(b"")
    backend.creation_wait = 0.05
    with pytest.raises(LockError, match="unknown holder"):
        with backend.lock("apply", timeout=0.05):
            pass
    long_ago = time.time() - CREATION_GRACE - 1
    os.utime(backend.lock_path, (long_ago, long_ago))
    with backend.lock("apply", timeout=0) as info:
        assert backend.lock_info() == info


def test_the_lock_is_not_reentrant_within_a_handle(backend):
    with backend.lock("apply"):
        with pytest.raises(LockError):
            with backend.lock("apply", timeout=0):
                pass


def _fail_writes(monkeypatch, where, code: int) -> None:
    """Make atomic writes to paths for which ``where(path)`` holds fail with ``code``."""
    real = files.atomic_write

    def atomic_write(path, data, mode=files.FILE_MODE):
        if where(Path(path)):
            raise OSError(code, os.strerror(code))
        return real(path, data, mode)
    monkeypatch.setattr(files, "atomic_write", atomic_write)


def test_a_failed_write_keeps_the_new_state_in_the_errored_file(backend, monkeypatch):
    state = _state_with_record()
    backend.write(state)
    _fail_writes(monkeypatch, lambda path: path == backend.path, errno.ENOSPC)
    state.put("t", ImageSetRecord("d" * 32, "2" * 32, "5", "6", "b" * 64))
    with pytest.raises(StateError) as caught:
        backend.write(state)
    message = str(caught.value)
    assert "No space left on device" in message and ".reconciler/state.json" in message
    assert str(backend.errored_path) in message and f"mv {backend.errored_path} {backend.path}" in message
    assert caught.value.errored_path == backend.errored_path
    assert _mode(backend.errored_path) == 0o600
    assert State.from_json(backend.errored_path.read_bytes()).get("t", "2" * 32) is not None
    assert state.serial == 1 and backend.read().serial == 1      # nothing moved
    monkeypatch.undo()
    backend.write(state)                                         # once fixed, it goes through
    assert backend.read().get("t", "2" * 32) is not None


def test_the_errored_file_goes_to_the_cwd_when_the_state_directory_is_not_writable(backend, monkeypatch, tmp_path):
    backend.write(_state_with_record())
    _fail_writes(monkeypatch, lambda path: path.parent == backend.path.parent, errno.EROFS)
    state = backend.read()
    with pytest.raises(StateError, match="Read-only file system") as caught:
        backend.write(state)
    assert caught.value.errored_path == tmp_path / "errored.state.json"
    assert json.loads(caught.value.errored_path.read_text())["serial"] == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_really_read_only_directory(backend, tmp_path):
    backend.write(_state_with_record())
    state = backend.read()
    backend.path.parent.chmod(0o500)
    try:
        with pytest.raises(StateError, match="Permission denied") as caught:
            backend.write(state)
        assert caught.value.errored_path == tmp_path / "errored.state.json"
    finally:
        backend.path.parent.chmod(0o700)


def test_a_corrupt_state_file_is_reported_with_its_backup(backend):
    state = _state_with_record()
    backend.write(state)
    backend.write(state)
    backend.path.write_text("{ torn")
    with pytest.raises(StateError, match=r"state.json:1:3: .*not valid JSON.*state.json.backup"):
        backend.read()
    with pytest.raises(StateError, match="refusing to overwrite"):
        backend.write(state)
    assert backend.path.read_text() == "{ torn"
