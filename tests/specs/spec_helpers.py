"""Helpers of the spec-loading tests: a temporary project to write spec files into and run the
loader in, so diagnostics carry short relative file names (``s.yaml:12:5: ...``). A module
with its own name (not conftest) so that test modules can import it unambiguously."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.core.errors import SpecError
from reconciler.spec.config import Config, load_config
from reconciler.spec.loader import load_specs

CASES = Path(__file__).parent / "cases"

DATASTORE = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
IMAGE_SET = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"

# The head of a valid spec; tests append an ``attributes:`` block (or replace parts).
HEAD = f"""\
apiVersion: reconciler/v1
kind: ImageSetMetadata
metadata:
  name: case
target:
  datastoreId: {DATASTORE}
  imageSetId: {IMAGE_SET}
"""


def at(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """(line, column), 1-based, of the ``occurrence``-th ``needle`` in ``text``."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


class Project:
    """A temporary working directory holding spec files."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if text.startswith("\n") else text, "utf-8")
        return path

    def load(self, *paths: str, config: Config | None = None, warnings: list | None = None):
        return load_specs(list(paths), config or load_config(None), warnings=warnings)

    def problems(self, *paths: str, config: Config | None = None) -> list[str]:
        """Every diagnostic as printed; [] when the specs are valid."""
        try:
            self.load(*paths, config=config)
        except SpecError as exc:
            return [str(d) for d in exc.diagnostics]
        return []

    def check(self, text: str, name: str = "s.yaml") -> list[str]:
        self.write(name, text)
        return self.problems(name)
