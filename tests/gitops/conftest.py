"""Fixtures for the GitOps tests (helpers in gitops_support.py).

* ``emu``: the emulator seeded with examples/dicom, the data the example specs target; its
  default data store has the id that examples/gitops/reconciler.yaml names. Its clock is this
  machine's; ``index_caught_up()`` moves it past a lagging search index (the
  search_index_lag reading), as the hours between an edit and a scheduled run would.
* ``s3_url``: one moto server per test process, with the example's state bucket and its KMS
  key (``alias/radiology-reconciler``, as examples/gitops/reconciler.yaml names it).
* ``metadata_repo``: examples/gitops in a temporary git repository wired to both.
* ``CI`` is set by each test explicitly (it decides redaction).
"""

from __future__ import annotations

import sys
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gitops_support import BUCKET, EXAMPLES_DICOM, KMS_ALIAS, MetadataRepo  # noqa: E402
from index_clock import Clock, catch_up_index  # noqa: E402
from moto_server import moto_server  # noqa: E402


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emu(clock):  # under the session reading (tests/conftest.py)
    from reconciler.emulator.server import ThreadedEmulator

    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02,
                          clock=clock) as emulator:
        yield emulator


@pytest.fixture
def index_caught_up(clock):
    """Call it to let the search index catch up with every completed version (nothing to do
    without a lag)."""
    return lambda: catch_up_index(clock)


@pytest.fixture(scope="session")
def s3_url():
    with moto_server() as url:
        boto3.client("s3", region_name="us-east-1", endpoint_url=url).create_bucket(Bucket=BUCKET)
        kms = boto3.client("kms", region_name="us-east-1", endpoint_url=url)
        key = kms.create_key(Description="radiology reconciler")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key)
        yield url


@pytest.fixture
def metadata_repo(tmp_path, emu, s3_url) -> MetadataRepo:
    return MetadataRepo(tmp_path / "checkout", emu, s3_url)

