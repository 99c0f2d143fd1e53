"""Named behaviour choices are documented and settable; the emulator stays apart from the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from reconciler.emulator.behaviours import CHOICES, BehaviourError, Behaviours
from reconciler.emulator.faults import ACTIONS
from reconciler.emulator.server import OptionsError, ThreadedEmulator

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler" / "emulator"
README = (PACKAGE / "README.md").read_text("utf-8")


@pytest.mark.parametrize("choice", CHOICES, ids=[c.name for c in CHOICES])
def test_every_behaviour_is_in_the_readme_table_with_its_default(choice):
    rows = [line for line in README.splitlines() if line.startswith(f"| `{choice.name}` |")]
    assert len(rows) == 1, f"{choice.name} missing from the README table"
    assert f"`{choice.default}`" in rows[0]
    for value in choice.values or ():
        assert f"`{value}`" in rows[0]


def test_every_fault_action_is_documented():
    for action in ACTIONS:
        assert f"`{action}`" in README


def test_behaviours_are_validated():
    assert Behaviours().apply_order == "removals_first"
    assert Behaviours({"write_burst": "10"}).write_burst == 10
    with pytest.raises(BehaviourError, match="unknown behaviour"):
        Behaviours({"no_such_thing": "x"})
    with pytest.raises(BehaviourError, match="must be one of"):
        Behaviours({"apply_order": "sideways"})
    with pytest.raises(BehaviourError, match="must be >= 1"):
        Behaviours({"default_page_size": "0"})
    with pytest.raises(OptionsError):
        ThreadedEmulator(behaviours={"apply_order": "sideways"})
    with pytest.raises(OptionsError):
        ThreadedEmulator(validation="lazy")


def test_emulator_imports_nothing_of_the_engine():
    allowed = {"reconciler.data.service_facts", "reconciler.data"}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level > 1:
                    pytest.fail(f"{path.name}: relative import outside the emulator")
                module = node.module or ""
                if node.level == 0 and module.split(".")[0] == "reconciler":
                    names = {f"{module}.{a.name}" for a in node.names} \
                        if module in ("reconciler", "reconciler.data") else {module}
                    assert names <= allowed, f"{path.name} imports {names - allowed}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "reconciler":
                        assert alias.name in allowed, f"{path.name} imports {alias.name}"
