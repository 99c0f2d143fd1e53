"""Real processes racing for one state: moto in server mode for S3, a shared directory locally.

Each test runs for both backends. Processes reach the moto server through
``AWS_ENDPOINT_URL_S3`` (so this also checks that the backend leaves endpoint resolution to
boto3's standard chain).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.core.errors import LockError
from reconciler.states import open_backend

from .conftest import BUCKET, REGION, spawn, unique_key
from .worker import COUNTER_ID, COUNTER_SPEC

TIMEOUT = 30


@pytest.fixture(params=["local", "s3"])
def shared(request, tmp_path, monkeypatch, aws_env) -> dict:
    """The config every process opens the same state with."""
    monkeypatch.chdir(tmp_path)
    if request.param == "local":
        return {"backend": "local", "path": str(tmp_path / "shared/.reconciler/state.json")}
    request.getfixturevalue("moto_server")
    return {"backend": "s3", "bucket": BUCKET, "key": unique_key(), "region": REGION}


def _open(config: dict, root: Path):
    backend = open_backend(config, root)
    backend.poll_interval, backend.max_poll_interval = 0.01, 0.05
    return backend


def test_no_update_is_lost_when_two_processes_increment_under_the_lock(shared, tmp_path):
    times = 20
    workers = [spawn("count", shared, str(times), "20", cwd=tmp_path) for _ in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=TIMEOUT)
        assert worker.returncode == 0 and out.strip() == "DONE", err
    state = _open(shared, tmp_path).read()
    assert state.get(COUNTER_SPEC, COUNTER_ID).version_after == str(2 * times)
    assert state.serial == 2 * times
    assert _open(shared, tmp_path).lock_info() is None


def test_of_two_processes_racing_for_the_lock_exactly_one_wins(shared, tmp_path):
    go = tmp_path / "go"
    workers = [spawn("race", shared, str(go), cwd=tmp_path) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "READY", worker.stderr.read()
        go.touch()                                    # both try at (nearly) the same moment
        results = {worker.pid: worker.stdout.readline().strip() for worker in workers}
        for worker in workers:                        # the winner holds the lock until now
            worker.stdin.close()
            assert worker.wait(TIMEOUT) == 0, worker.stderr.read()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    winners = [pid for pid, out in results.items() if out == "WON"]
    losers = [pid for pid, out in results.items() if out.startswith("LOST ")]
    assert len(winners) == 1 and len(losers) == 1, results
    assert f"pid {winners[0]}" in results[losers[0]] and "'race'" in results[losers[0]]
    assert _open(shared, tmp_path).lock_info() is None


def test_a_waiter_fails_clearly_then_succeeds_once_the_holder_ends(shared, tmp_path):
    holder = spawn("hold", shared, cwd=tmp_path)
    try:
        line = holder.stdout.readline()
        assert line.startswith("LOCKED "), holder.stderr.read()
        lock_id = line.split()[1]
        waiter = _open(shared, tmp_path)
        with pytest.raises(LockError) as caught:
            with waiter.lock("apply", timeout=0.2):
                pass
        assert f"pid {holder.pid}" in str(caught.value) and lock_id in str(caught.value)
        holder.stdin.close()                          # the holder finishes its work
        with waiter.lock("apply", timeout=TIMEOUT) as info:
            assert info.pid == os.getpid()
        assert holder.wait(TIMEOUT) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
