"""A state written by format 1, kept as a file: every future reconciler must still read it
the same way (or upgrade it on purpose, with a golden file of its own beside this one)."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.states import State

GOLDEN = Path(__file__).with_name("golden") / "state.v1.json"


def test_the_format_1_golden_state_reads_and_writes_back_unchanged():
    text = GOLDEN.read_text()
    state = State.from_json(text, source=str(GOLDEN))
    assert (state.lineage, state.serial, len(state)) == ("6f1c1f0e-3b7a-4c55-9d0e-2a4b6c8d0e1f", 3, 2)
    ct = state.get("ct-chest-0042", "9a8b7c6d5e4f30211203f4e5d6c7b8a9")
    assert (ct.version_before, ct.version_after, ct.serial, ct.last_operation) == ("1", "2", 1, "apply")
    # The salt is fixed in the file, so the hashes of the values applied are known.
    assert state.matches(ct, "Patient.PatientName", "DOE^JANE")
    assert state.matches(ct, "Study.AccessionNumber", None)
    assert not state.matches(ct, "Patient.PatientName", "DOE^JOHN")
    mr = state.get("mr-selector", "11112222333344445555666677778888")
    assert mr.last_operation == "rollback" and state.matches(mr, "Study.StudyDescription", "MR BRAIN")
    again = json.loads(state.to_json())
    assert {**again, "reconciler_version": None} == {**json.loads(text), "reconciler_version": None}
