"""Fixtures for the emulator's own tests: everything goes through boto3 over HTTP.

``api`` wraps a boto3 client for the ``emulator`` fixture (tests/conftest.py);
``make_emulator`` / ``make_api`` start extra emulators with other options and stop them after
the test.
"""

from __future__ import annotations

from typing import Any

import pytest
from emulator_support import EXAMPLES_DICOM, Api

from reconciler.emulator.server import ThreadedEmulator


@pytest.fixture
def api(emulator) -> Api:
    return Api(emulator)


@pytest.fixture
def make_emulator():
    """Start an emulator with other options: ``make_emulator(validation="sync", ...)``."""
    started: list[ThreadedEmulator] = []

    def start(**options: Any) -> ThreadedEmulator:
        options.setdefault("seeds", [str(EXAMPLES_DICOM)])
        emu = ThreadedEmulator(**options)
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def make_api(make_emulator):
    def start(**options: Any) -> Api:
        return Api(make_emulator(**options))
    return start
