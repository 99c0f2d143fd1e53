"""Saved plans in tests: they are sealed with the project's key (reconciler/documents/
planfile.py), so a test that reads or forges one goes through these, with the key the session
uses by default (the key file under the session's XDG_CONFIG_HOME, tests/conftest.py) or the
one given. ``tests/`` is on ``sys.path`` through its conftest."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from reconciler.documents.planfile import open_plan, seal_plan
from reconciler.states.keys import KeySource, key_source


def read_plan(path: str | Path, keys: KeySource | None = None) -> dict[str, Any]:
    """The plan document inside a saved plan file (not validated), as plain lists and dicts
    that a test may change: ``open_plan`` keeps its lists packed, and an item read from a
    packed list is a fresh copy each time (a deep copy gives plain lists)."""
    return copy.deepcopy(open_plan(Path(path).read_bytes(), keys or key_source(None),
                                   str(path)))


def write_plan(doc: dict[str, Any], path: str | Path, keys: KeySource | None = None) -> None:
    """Seal ``doc`` as it is (an edited or printed plan too) into ``path``."""
    Path(path).write_bytes(seal_plan(doc, keys or key_source(None)))


def sealed_envelope(path: str | Path) -> dict[str, Any]:
    """The sealed file's outer JSON (header, wrapped data key, nonce, ciphertext)."""
    return json.loads(Path(path).read_text())
