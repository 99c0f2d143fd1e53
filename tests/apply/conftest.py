"""Fixtures for the end-to-end tests of apply, state, drift and rollback.

* ``emu``: an emulator seeded with examples/dicom (five image sets, three of them targeted by
  examples/specs), updates staying LOCKED for 20 ms: short, but a real asynchronous window.
  Its ``clock`` is this machine's; ``index_caught_up()`` moves it past a lagging search
  index (the search_index_lag reading) where a test's point is the steady state.
* ``project``: a project directory wired to ``emu`` with the example specs.
* ``fast_timing`` (autouse): only the *timing* knobs are turned down, so the suite runs in
  seconds — botocore's retry backoff for throttling (1 s base) and the engine's poll and
  backoff intervals. What is retried, how often and against what is left exactly as shipped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import botocore.session
import pytest
from botocore import loaders
from botocore.retries import standard

from apply_support import EXAMPLE_STUDIES, EXAMPLES_DICOM, Project
from index_clock import Clock, catch_up_index
from reconciler.engine import applier, planner
from reconciler.emulator.server import ThreadedEmulator


@dataclass
class FastApplyOptions(applier.ApplyOptions):
    poll_interval: float = 0.01
    backoff_base: float = 0.01


@functools.cache
def _shared_loader(data_path):
    return loaders.create_loader(data_path)


@pytest.fixture(autouse=True)
def shared_model_loader(monkeypatch):
    """Every command builds new boto3 sessions, and each session parses botocore's JSON
    models again (~0.15 s a client). In this process they share one loader, so the models
    are parsed once; what the clients do is unchanged."""
    monkeypatch.setattr(botocore.session, "create_loader", _shared_loader)


@pytest.fixture(autouse=True)
def fast_timing(monkeypatch):
    monkeypatch.setattr(standard.ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG",
                        {"throttling_base_scale": 0.01, "non_throttling_base_scale": 0.005})
    monkeypatch.setattr(applier, "ApplyOptions", FastApplyOptions)
    monkeypatch.setattr(planner, "PlanOptions",
                        functools.partial(planner.PlanOptions, poll_interval=0.01))


@pytest.fixture
def clock() -> Clock:
    """``emu``'s clock: this machine's, moved forward only by ``index_caught_up``."""
    return Clock()


@pytest.fixture
def emu(clock):  # under the session reading (tests/conftest.py)
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02,
                          clock=clock) as emulator:
        yield emulator


@pytest.fixture
def index_caught_up(clock):
    """Call it to let the search index catch up with every completed version (under
    search_index_lag the emulator's clock moves past the lag; nothing to do without a lag)."""
    return lambda: catch_up_index(clock)


@pytest.fixture
def project(tmp_path, emu, monkeypatch) -> Project:
    found = Project(tmp_path / "project", emu)
    monkeypatch.chdir(found.root)        # relative paths (plan files, errored states) stay here
    return found




@pytest.fixture
def ids(project):
    """Spec name → the image set its example study was seeded as."""
    return {name: project.image_set_of(study) for name, study in EXAMPLE_STUDIES.items()}


@pytest.fixture
def applied(project, ids):
    """The example specs applied once (exit 0); the image set ids by spec name."""
    result = project.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.stderr
    return ids
