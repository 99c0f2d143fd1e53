"""States kept as files: every future reconciler must still read them the same way (or upgrade
them on purpose, with a golden file of its own beside these).

* ``state.v1.json``: format 1, salted hashes only. Read as it is, written back unchanged while
  its keys are not used; the first use of its keys re-keys it (format 2) without losing what
  it says.
* ``state.v2.json``: format 2, keyed, sealed with the test key below (an environment variable
  source: this key guards nothing but this file).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reconciler.core.errors import KeyUnavailableError
from reconciler.states import State
from reconciler.states.keys import EnvKeySource

GOLDEN = Path(__file__).with_name("golden")
GOLDEN_V1, GOLDEN_V2 = GOLDEN / "state.v1.json", GOLDEN / "state.v2.json"
TEST_KEY = "Z29sZGVuLXRlc3Qta2V5LW5vdC1hLXNlY3JldC0wMDAwMDAwMDAwMDA="
CT, MR = ("ct-chest-0042", "9a8b7c6d5e4f30211203f4e5d6c7b8a9"), \
    ("mr-selector", "11112222333344445555666677778888")
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
INSTANCE = "1.2.826.0.1.3680043.8.498.1.1.1"
GONE_SERIES = "1.2.826.0.1.3680043.8.498.1.9"


def golden_key() -> EnvKeySource:
    return EnvKeySource(environ={"RECONCILER_KEY": TEST_KEY})


def _says_what_it_said(state: State) -> None:
    ct = state.get(*CT)
    assert (ct.version_before, ct.version_after, ct.serial, ct.last_operation) == ("1", "2", 1, "apply")
    assert state.matches(ct, "Patient.PatientName", "DOE^JANE")
    assert state.matches(ct, "Study.AccessionNumber", None)
    assert not state.matches(ct, "Patient.PatientName", "DOE^JOHN")
    assert state.matches(ct, f"Series[{GONE_SERIES}]", None)
    mr = state.get(*MR)
    assert mr.last_operation == "rollback" and state.matches(mr, "Study.StudyDescription", "MR BRAIN")
    assert state.spec_digest("a" * 64) == mr.spec_digest


def test_the_format_1_golden_state_reads_and_writes_back_unchanged():
    text = GOLDEN_V1.read_text()
    state = State.from_json(text, source=str(GOLDEN_V1))
    assert (state.lineage, state.serial, len(state)) == ("6f1c1f0e-3b7a-4c55-9d0e-2a4b6c8d0e1f", 3, 2)
    again = json.loads(state.to_json())
    assert {**again, "reconciler_version": None} == {**json.loads(text), "reconciler_version": None}


def test_the_format_1_golden_state_is_re_keyed_on_first_use_with_a_notice(caplog):
    text = GOLDEN_V1.read_text()
    state = State.from_json(text, source="golden/state.json", keys=golden_key())
    with caplog.at_level(logging.WARNING):
        state.open_keys()
    assert "golden/state.json holds salted hashes that are not keyed" in caplog.text
    assert "environment variable RECONCILER_KEY" in caplog.text
    _says_what_it_said(state)
    written = state.to_json()
    doc = json.loads(written)
    assert doc["format_version"] == "2" and doc["keys"]["generation"] == 1
    # Not one stored hash, UID or spec digest of format 1 is left.
    old = json.loads(text)["specs"]
    for name, isid in (CT, MR):
        record = old[name]["image_sets"][isid]
        for value in [*record["hashes"].values(), record["spec_digest"]]:
            assert value not in written
    for uid in (SERIES, INSTANCE, GONE_SERIES):
        assert uid not in written
    # Read back with the key: the same answers.
    _says_what_it_said(State.from_json(written, keys=golden_key()))
    assert TEST_KEY not in caplog.text


def test_rekey_of_the_format_1_golden_state_needs_only_the_new_key():
    nowhere = EnvKeySource(environ={})            # the state's own source: not even set
    state = State.from_json(GOLDEN_V1.read_text(), source="golden", keys=nowhere)
    before, after = state.rekey(golden_key())
    assert before == "salted hashes, not keyed (format 1)"
    assert after.startswith("key generation 1 (id ") and "environment variable's key" in after
    _says_what_it_said(state)
    _says_what_it_said(State.from_json(state.to_json(), keys=golden_key()))


def test_the_format_2_golden_state_reads_and_writes_back_unchanged():
    text = GOLDEN_V2.read_text()
    state = State.from_json(text, source=str(GOLDEN_V2), keys=golden_key())
    assert (state.lineage, state.serial, len(state)) == ("6f1c1f0e-3b7a-4c55-9d0e-2a4b6c8d0e1f", 3, 2)
    _says_what_it_said(state)
    again = json.loads(state.to_json())
    assert {**again, "reconciler_version": None} == {**json.loads(text), "reconciler_version": None}
    # The Series and SOP Instance UIDs come back from the UIDs at hand (the live document's).
    paths = state.resolve_paths(state.get(*CT), {SERIES, INSTANCE, "9.9.9"})
    assert sorted(paths.values()) == sorted([
        "Patient.PatientName", "Study.AccessionNumber", f"Series[{SERIES}].SeriesDescription",
        f"Series[{SERIES}].Instances[{INSTANCE}].00091001",
        next(p for p in paths.values() if p.startswith("Series[#"))])   # not live: a token


def test_the_format_2_golden_state_without_its_key_cannot_be_checked(tmp_path):
    state = State.from_json(GOLDEN_V2.read_text(), source="golden",
                            keys=EnvKeySource(environ={"RECONCILER_KEY": "Q" * 44}))
    assert len(state) == 2              # ids and versions are there without the key …
    with pytest.raises(KeyUnavailableError, match="golden was sealed with an environment "
                                                  "variable's key") as caught:
        state.matches(state.get(*CT), "Patient.PatientName", "DOE^JANE")   # … a comparison is not
    assert "Q" * 44 not in str(caught.value)
