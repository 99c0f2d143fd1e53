"""Renamed specs and records forgotten by hand, end to end: `reconciler state mv` and
`state rm` (under the state lock, one write, a backup of the snapshot they change), and the
declarative `moved` entry of reconciler.yaml that plan shows and apply does, so a renamed spec
keeps its records (and what rollback goes back to) instead of being forgotten and re-recorded.
"""

from __future__ import annotations

import json
import os
import stat

from plan_files import read_plan
from apply_support import check_report

from reconciler.states import open_backend


def _rename_spec(project, old: str, new: str) -> None:
    """Rename the spec in its file (metadata.name), as a pull request would."""
    path = project.specs_dir / f"{old}.yaml"
    text = path.read_text()
    assert text.count(f"name: {old}\n") == 1
    path.write_text(text.replace(f"name: {old}\n", f"name: {new}\n"))


def test_state_mv_files_the_records_under_the_new_name_with_a_backup_under_the_lock(
        project, applied):
    ct = applied["ct-small"]
    before = project.state()
    record = before["specs"]["ct-small"]["image_sets"][ct]

    dry = project.run("state", "mv", "ct-small", "ct-chest", "--dry-run")
    assert dry.exit_code == 0 and "Would move 1 record of spec ct-small" in dry.stdout
    assert project.state() == before

    result = project.run("state", "mv", "ct-small", "ct-chest")
    assert result.exit_code == 0, result.stderr
    backup = project.state_path.with_name(f"state.json.{before['serial']}.backup")
    assert (f"Moved 1 record of spec ct-small ({ct}) to spec ct-chest: state serial "
            f"{before['serial']} -> {before['serial'] + 1}; the snapshot before is kept in "
            f"{backup}.") in result.stdout
    assert json.loads(backup.read_text()) == before
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    after = project.check_state_schema()
    assert "ct-small" not in after["specs"]
    assert after["specs"]["ct-chest"]["image_sets"][ct] == record   # the same record, serial too

    # The spec renamed in its file: nothing to change, nothing orphaned; rollback still knows
    # where to go back to.
    _rename_spec(project, "ct-small", "ct-chest")
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    assert project.run("drift").exit_code == 0

    # A second spec managing other attributes of the same image set: its records cannot be
    # filed under a name that has a record of that image set already.
    project.write_spec("ct-extra", {"Study": {"ReferringPhysicianName": "DR^WHO"}},
                       image_set_id=ct)
    assert project.run("apply", "--auto-approve").exit_code == 0
    serial = project.state()["serial"]
    clash = project.run("state", "mv", "ct-extra", "ct-chest")
    assert clash.exit_code == 1
    assert (f"spec ct-chest already has a record of image set {ct}: remove it first "
            f"(reconciler state rm ct-chest --image-set-id {ct}); nothing was changed") \
        in clash.stderr
    unknown = project.run("state", "mv", "nope", "other")
    assert unknown.exit_code == 1 and "no record of spec nope in the state" in unknown.stderr
    bad = project.run("state", "mv", "ct-chest", "Bad")
    assert bad.exit_code == 1 and "'Bad' is not a spec name" in bad.stderr
    assert project.state()["serial"] == serial


def test_state_rm_forgets_records_and_leaves_the_metadata(project, applied):
    ct, nm = applied["ct-small"], applied["nm-bone"]
    versions = project.version_count(ct)
    serial = project.state()["serial"]
    dry = project.run("state", "rm", "ct-small", "--dry-run")
    assert dry.exit_code == 0 and f"Would remove 1 record of spec ct-small ({ct})" in dry.stdout
    result = project.run("state", "rm", "ct-small", "--image-set-id", ct, "--backup",
                         str(project.root / "before.json"))
    assert result.exit_code == 0, result.stderr
    assert f"Removed 1 record of spec ct-small ({ct}): state serial {serial} -> {serial + 1}" \
        in result.stdout
    assert "metadata was not touched" in result.stdout
    assert json.loads((project.root / "before.json").read_text())["serial"] == serial
    assert "ct-small" not in project.check_state_schema()["specs"]
    assert project.version_count(ct) == versions
    # The spec is still there: it is not-applied now, and the next plan records it again.
    result = project.run("drift", "--json")
    assert {i["spec"]: i["status"] for i in json.loads(result.stdout)["image_sets"]}[
        "ct-small"] == "not-applied"
    missing = project.run("state", "rm", "nm-bone", "--image-set-id", ct)
    assert missing.exit_code == 1 and f"no record of spec nm-bone and image set {ct}" \
        in missing.stderr
    assert project.record("nm-bone", nm) is not None


def test_state_edits_wait_for_the_lock_and_fail_naming_its_holder(project, applied):
    serial = project.state()["serial"]
    backend = open_backend({"path": str(project.state_path)}, project.root)
    with backend.lock("apply"):
        result = project.run("state", "rm", "ct-small")
        assert result.exit_code == 1
        assert "is locked by" in result.stderr and "for 'apply'" in result.stderr
        moved = project.run("state", "mv", "ct-small", "ct-chest")
        assert moved.exit_code == 1
    assert project.state()["serial"] == serial
    assert not list(project.state_path.parent.glob("state.json.*.backup"))


def test_a_moved_entry_is_planned_then_applied_keeping_the_records(project, applied):
    ct = applied["ct-small"]
    record = project.record("ct-small", ct)
    _rename_spec(project, "ct-small", "ct-chest")
    project.write_config({**project.config, "moved": [{"from": "ct-small", "to": "ct-chest"}]})

    # Before apply, drift already checks the records under the new name: nothing orphaned.
    drift = project.run("drift")
    assert drift.exit_code == 0 and "ct-chest: image set" in drift.stdout

    plan = project.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.stderr
    assert ("  # ct-small has moved to ct-chest (1 image set): its records in the state "
            "follow the new name") in plan.stdout
    assert "Plan: 0 image sets to update, 3 unchanged, 0 attributes changed; 1 record to move." \
        in plan.stdout
    assert "forget" not in plan.stdout
    saved = project.run("plan", "--out", "plan.json")
    assert saved.exit_code == 0
    doc = read_plan(project.root / "plan.json")
    assert doc["moved"] == [{"from": "ct-small", "to": "ct-chest", "image_sets": [
        {"datastore_id": project.datastore_id, "image_set_id": ct,
         "state_serial": record["serial"]}]}]

    result = project.run("apply", "plan.json", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = check_report(json.loads(result.stdout))
    assert report["summary"]["moved"] == 1
    state = project.check_state_schema()
    assert "ct-small" not in state["specs"]
    moved = state["specs"]["ct-chest"]["image_sets"][ct]
    assert (moved["version_before"], moved["version_origin"]) == (record["version_before"], "1")
    # Done: the entry stays harmless, and the renamed spec is in sync.
    assert project.run("plan", "--detailed-exitcode").exit_code == 0
    assert project.run("drift").exit_code == 0
    rollback = project.run("rollback", "ct-chest", "--auto-approve")
    assert rollback.exit_code == 0, rollback.stdout + rollback.stderr


def test_a_moved_entry_that_contradicts_the_specs_or_the_state_stops_the_plan(project, applied):
    project.write_config({**project.config, "moved": [{"from": "ct-small", "to": "ct-chest"}]})
    still = project.run("plan")
    assert still.exit_code == 1
    config = project.config_path
    line = config.read_text().splitlines().index("- from: ct-small") + 1
    assert (f"Error: {config}:{line}: moved: spec ct-small is moved to ct-chest, but a spec "
            f"named ct-small is still in the specs ({project.specs_dir / 'ct-small.yaml'}:3)") \
        in still.stderr
    _rename_spec(project, "ct-small", "ct-chest")
    assert project.run("state", "mv", "nm-bone", "ct-chest").exit_code == 0
    taken = project.run("plan")
    assert taken.exit_code == 1
    assert "but the state has records under ct-chest already" in taken.stderr
