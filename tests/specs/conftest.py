"""Fixtures of the spec-loading tests (helpers live in spec_helpers.py)."""

from __future__ import annotations

import pytest
from spec_helpers import Project


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    """A temporary working directory to write spec files into and load them from."""
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path)
