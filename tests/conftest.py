"""Session-wide test setup shared by every test package.

* Fake AWS credentials and region for the whole session, and no profile or endpoint override
  leaking in from the developer's environment: nothing here may ever reach real AWS.
* ``XDG_CONFIG_HOME`` points at a directory of the session's own, so the key file that keys
  states and seals saved plans by default (reconciler/states/keys.py) is created there and
  never in the real home directory; ``RECONCILER_KEY`` is not inherited.
* ``emulator`` / ``emulator_client``: a local HealthImaging emulator seeded with the bundled
  DICOM files (``examples/dicom``) and a boto3 client for it.
* The reading (tests/matrix/readings.py): ``RECONCILER_TEST_READING="name=value[,...]"``
  (named behaviours of reconciler/emulator/behaviours.py, and ``validation=sync``) is parsed
  once here and applied to every emulator the tests start — the fixtures here, in
  tests/apply, tests/gitops, and those tests build themselves — unless a test sets that
  behaviour or validation mode explicitly. The ``reading`` fixture gives it to tests whose
  expected outcome depends on it. Unset: the defaults, exactly as before.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from matrix import readings

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DICOM = REPO_ROOT / "examples" / "dicom"
TEST_DATA = Path(__file__).resolve().parent / "data"

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


_SAVED_ENV: dict[str, str] = {}

READING = readings.current()          # refuses unknown names and values


def _apply_reading_to_every_emulator() -> None:
    """Every ThreadedEmulator built in this session gets READING (explicit arguments win)."""
    from reconciler.emulator.server import ThreadedEmulator

    if READING.is_default or getattr(ThreadedEmulator.__init__, "reading", None):
        return
    original = ThreadedEmulator.__init__

    @functools.wraps(original)
    def __init__(self, **kwargs):
        original(self, **readings.emulator_options(READING, kwargs))
    __init__.reading = READING
    ThreadedEmulator.__init__ = __init__


def pytest_report_header(config):
    return f"emulator reading: {READING.label} (${readings.ENV})"


def pytest_configure(config):
    """Before collection, so that even import-time code sees only the fake environment."""
    config.addinivalue_line("markers", "reading: the test runs under the reading given by "
                            "$RECONCILER_TEST_READING (tests/matrix/readings.py)")
    _apply_reading_to_every_emulator()
    _SAVED_ENV.update(os.environ)
    for name in list(os.environ):
        if name == "AWS_PROFILE" or name.startswith("AWS_ENDPOINT_URL") or name in (
                "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            del os.environ[name]
    os.environ.update(_FAKE_AWS_ENV)
    # An empty file, so no developer config (profiles, retries, endpoints) applies.
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    # The default key file goes here, never into the real home directory.
    os.environ.pop("RECONCILER_KEY", None)
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="reconciler-test-config-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("XDG_CONFIG_HOME", ""), ignore_errors=True)
    os.environ.clear()
    os.environ.update(_SAVED_ENV)


def medical_imaging_client(url: str, **config):
    """A boto3 client for an emulator URL (host-prefix injection off, as it must be)."""
    return boto3.client("medical-imaging", endpoint_url=url, region_name="us-east-1",
                        config=Config(inject_host_prefix=False, **config))


@pytest.fixture(scope="session")
def reading() -> readings.Reading:
    """The session's reading: ``reading.behaviour("versions_order")`` is the effective value,
    ``reading.validation`` the validation mode, ``reading.is_default`` whether nothing is
    changed."""
    return READING


@pytest.fixture
def emulator():
    """A running emulator seeded with examples/dicom (update delay 0.05 s), under READING."""
    from reconciler.emulator.server import ThreadedEmulator

    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.05) as emu:
        yield emu


@pytest.fixture
def emulator_client(emulator):
    return medical_imaging_client(emulator.url)


@pytest.fixture
def example_project(emulator, tmp_path):
    """A metadata repository in tmp_path: the example specs (examples/specs) and a
    reconciler.yaml for the emulator, with the update quota raised so tests are not paced
    to 0.25 updates a second. The state goes to tmp_path/.reconciler/state.json."""
    import shutil

    shutil.copytree(REPO_ROOT / "examples" / "specs", tmp_path / "specs")
    (tmp_path / "reconciler.yaml").write_text(
        f"datastoreId: {emulator.datastore_id}\nspecs: [specs]\n"
        "quotas: {UpdateImageSetMetadata: 100}\n")
    return tmp_path


@pytest.fixture
def run_reconciler(emulator):
    """Run ``python -m reconciler ARGS`` as a real subprocess in a project directory against
    the emulator; ``ci=True`` sets CI (redaction on), otherwise CI is unset."""
    import subprocess
    import sys

    def run(project, *args, ci: bool = False):
        env = dict(os.environ, AWS_ENDPOINT_URL_MEDICAL_IMAGING=emulator.url)
        env.pop("CI", None)
        if ci:
            env["CI"] = "true"
        return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=120)
    return run
