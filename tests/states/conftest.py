"""Fixtures for the state tests: every backend behind one face, and an S3 server for processes.

``store`` is parametrised over the backends, so a test that takes it is part of the
conformance suite that every backend must pass (Terraform's ``statemgr`` testing pattern).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from moto import mock_aws
from moto_server import moto_server as started_moto

from reconciler.states import StateBackend, open_backend
from reconciler.states.keys import EnvKeySource, FileKeySource, KeySource
from reconciler.states.kms import KmsKeySource
from reconciler.states.s3 import make_client

BUCKET = "reconciler-state-test"
KEY = "team/state.json"
REGION = "us-east-1"
WORKER = Path(__file__).with_name("worker.py")


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials only; nothing here may reach a real account."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@dataclass
class Store:
    """One storage location, and a way to open any number of independent handles on it."""

    kind: str
    config: dict[str, Any]
    root: Path
    raw: Callable[[str], bytes | None]       # suffix ("" state, ".lock", …) → stored bytes
    put: Callable[[str, bytes], None]        # suffix, bytes → stored as they are

    def open(self, keys: KeySource | None = None) -> StateBackend:
        backend = open_backend(self.config, self.root, keys=keys)
        backend.poll_interval, backend.max_poll_interval = 0.01, 0.05
        return backend


@contextmanager
def local_store(tmp_path: Path) -> Iterator[Store]:
    config = {"backend": "local", "path": "project/.reconciler/state.json"}
    base = tmp_path / "project/.reconciler/state.json"

    def raw(suffix: str = "") -> bytes | None:
        path = base.with_name(base.name + suffix)
        return path.read_bytes() if path.exists() else None

    def put(suffix: str, data: bytes) -> None:
        base.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        base.with_name(base.name + suffix).write_bytes(data)

    yield Store("local", config, tmp_path, raw, put)


@contextmanager
def s3_store(tmp_path: Path) -> Iterator[Store]:
    """S3 through moto's in-process mock (``mock_aws``)."""
    with mock_aws():
        client = make_client(REGION)         # a cached session: a fresh one costs ~0.2 s
        client.create_bucket(Bucket=BUCKET)

        def raw(suffix: str = "") -> bytes | None:
            try:
                return client.get_object(Bucket=BUCKET, Key=KEY + suffix)["Body"].read()
            except client.exceptions.NoSuchKey:
                return None

        def put(suffix: str, data: bytes) -> None:
            client.put_object(Bucket=BUCKET, Key=KEY + suffix, Body=data)

        yield Store("s3", {"backend": "s3", "bucket": BUCKET, "key": KEY, "region": REGION},
                    tmp_path, raw, put)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch, aws_env) -> Iterator[Store]:
    """Every backend in turn: a test taking this fixture is part of the conformance suite."""
    monkeypatch.chdir(tmp_path)              # errored files in the cwd stay in tmp_path
    with (local_store if request.param == "local" else s3_store)(tmp_path) as found:
        yield found


@pytest.fixture(params=["file", "env", "kms"])
def key_sources(request, tmp_path) -> Iterator[Callable[[str], KeySource]]:
    """Every kind of key source in turn: ``make(name)`` gives the key called ``name`` (the same
    name, the same key). KMS is moto's, in process; it nests in the S3 store's mock."""
    kind = request.param
    if kind == "file":
        def make(name: str) -> KeySource:
            return FileKeySource(tmp_path / "keys" / name)
        yield make
    elif kind == "env":
        def make(name: str) -> KeySource:
            secret = hashlib.sha256(name.encode()).hexdigest()
            return EnvKeySource(environ={"RECONCILER_KEY": secret})
        yield make
    else:
        with mock_aws():
            client = boto3.client("kms", region_name=REGION)
            arns: dict[str, str] = {}

            def make(name: str) -> KeySource:
                if name not in arns:
                    arns[name] = client.create_key(Description=name)["KeyMetadata"]["Arn"]
                return KmsKeySource(arns[name], region=REGION)
            yield make


@pytest.fixture
def s3(tmp_path, monkeypatch, aws_env) -> Iterator[Store]:
    monkeypatch.chdir(tmp_path)
    with s3_store(tmp_path) as found:
        yield found


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """moto as a real HTTP server on port 0, one per test process (stopping one takes 0.5 s)."""
    with started_moto() as url:
        boto3.client("s3", region_name=REGION, endpoint_url=url, aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture
def moto_server(aws_env, monkeypatch, moto_server_url) -> str:
    """The server, reached by this process and its children through ``AWS_ENDPOINT_URL_S3``.
    Tests sharing it use keys of their own (see :func:`unique_key`)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server_url)
    return moto_server_url


def unique_key() -> str:
    return f"{uuid.uuid4()}/{KEY}"


def spawn(mode: str, config: dict[str, Any], *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), mode, json.dumps(config), *args],
                            cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
