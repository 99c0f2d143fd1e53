"""A saved plan is checked against the state and the specs before anything is sent: another
state (lineage), another apply that recorded the same image set since (per-record serial), an
edited or removed spec (digest), a plan printed for humans without its payloads, a plan
edited by hand. Nothing of a refused or stale entry is written."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from plan_files import read_plan, sealed_envelope, write_plan

from apply_support import CT_WANTED, READING, check_report
from reconciler.documents import plans


def plan_to(project, name="plan.json", *args, ci=False):
    result = project.run("plan", "--out", name, *args, ci=ci)
    assert result.exit_code == 0, result.stderr
    return str(project.root / name)


def apply_saved(project, plan):
    result = project.run("apply", plan, "--json")
    items = {}
    if result.stdout.strip().startswith("{"):
        items = {i["spec"]: i for i in check_report(result.json)["image_sets"]}
    return result, items


def counts(project, ids):
    return {name: project.version_count(i) for name, i in ids.items()}


def test_plan_of_another_state_lineage_is_refused(project, ids):
    assert project.run("apply", str(project.specs_dir / "sc-deid.yaml"),
                       "--auto-approve").exit_code == 0
    lineage = project.state()["lineage"]
    plan = plan_to(project)
    assert read_plan(plan)["state"]["lineage"] == lineage
    assert sealed_envelope(plan)["lineage"] == lineage      # the header says it too
    # The state is replaced by another one (another project's, or a fresh start).
    shutil.rmtree(project.state_path.parent)
    assert project.run("apply", str(project.specs_dir / "nm-bone.yaml"),
                       "--auto-approve").exit_code == 0
    other = project.state()
    assert other["lineage"] != lineage
    before = counts(project, ids)

    result, _ = apply_saved(project, plan)
    assert result.exit_code == 1
    assert "the plan was made against another state" in result.stderr
    assert lineage in result.stderr and other["lineage"] in result.stderr
    assert result.stdout == ""
    assert counts(project, ids) == before                 # nothing written
    assert project.state() == other                       # nor recorded


def test_plan_made_before_another_apply_of_the_same_image_set_is_stale_for_it(project, ids):
    plan = plan_to(project)                               # no state yet
    # Another apply records sc-deid; then someone puts the old values back by hand, so that
    # the live image set matches the plan's "before" again: only the state can tell.
    assert project.run("apply", str(project.specs_dir / "sc-deid.yaml"),
                       "--auto-approve").exit_code == 0
    record = project.record("sc-deid", ids["sc-deid"])
    project.client.update_image_set_metadata(
        datastoreId=project.datastore_id, imageSetId=ids["sc-deid"], latestVersionId="2",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"})
    project.wait_unlocked(ids["sc-deid"])

    result, items = apply_saved(project, plan)
    assert result.exit_code == 1
    item = items["sc-deid"]
    assert item["status"] == "stale"
    assert item["reason"].endswith("the state of this image set changed since the plan was made")
    assert project.version_count(ids["sc-deid"]) == 3      # 1, ours, the manual revert
    assert project.record("sc-deid", ids["sc-deid"]) == record
    # The plan's other image sets were not touched by that apply: they go ahead.
    assert items["ct-small"]["status"] == items["nm-bone"]["status"] == "applied"
    assert counts(project, ids)["ct-small"] == counts(project, ids)["nm-bone"] == 2


def test_plan_made_after_an_apply_is_not_stale(project, ids):
    assert project.run("apply", str(project.specs_dir / "sc-deid.yaml"),
                       "--auto-approve").exit_code == 0
    plan = plan_to(project)
    result, items = apply_saved(project, plan)
    assert result.exit_code == 0, result.stderr
    assert items["sc-deid"]["status"] == "unchanged"
    assert items["ct-small"]["status"] == items["nm-bone"]["status"] == "applied"


def test_spec_edited_after_the_plan_is_stale(project, ids):
    plan = plan_to(project)
    path = project.specs_dir / "ct-small.yaml"
    path.write_text(path.read_text().replace("CT CHEST", "CT ABDOMEN"))
    # A comment is not part of a spec: editing one does not make a plan stale.
    nm = project.specs_dir / "nm-bone.yaml"
    nm.write_text("# reviewed by the imaging team\n" + nm.read_text())

    result, items = apply_saved(project, plan)
    assert result.exit_code == 1
    assert items["ct-small"]["status"] == "stale"
    assert items["ct-small"]["reason"].endswith("spec ct-small changed since the plan was made")
    assert project.version_count(ids["ct-small"]) == 1
    assert project.record("ct-small", ids["ct-small"]) is None
    assert items["nm-bone"]["status"] == items["sc-deid"]["status"] == "applied"


def test_spec_removed_after_the_plan_is_stale(project, ids):
    plan = plan_to(project)
    (project.specs_dir / "nm-bone.yaml").unlink()
    result, items = apply_saved(project, plan)
    assert result.exit_code == 1
    assert items["nm-bone"]["status"] == "stale"
    assert "no longer in the specs" in items["nm-bone"]["reason"]
    assert project.version_count(ids["nm-bone"]) == 1


def _study_update_of(doc, spec):
    """The plan entry whose request carries ``spec``'s Patient/Study changes: a study update
    where the example image sets are primary ones (the seeds are), else ``spec``'s own
    per-image-set entry (seed_primary=false)."""
    if READING.behaviour("seed_primary") == "true":
        return next(g for g in doc["groups"] if any(m["spec"] == spec for m in g["members"]))
    assert doc["groups"] == []
    return next(e for e in doc["image_sets"] if e["spec"] == spec)


def test_plan_printed_with_redaction_is_refused(project, ids):
    printed = project.run("plan", "--json", ci=True)        # CI: redaction on
    assert printed.exit_code == 0
    doc = printed.json
    assert doc["redacted"] is True
    request = _study_update_of(doc, "ct-small")["requests"][0]
    assert request["updatableAttributes"]["redacted"] is True           # no payload in it
    assert CT_WANTED not in printed.stdout
    (project.root / "printed.json").write_text(printed.stdout)

    result, _ = apply_saved(project, str(project.root / "printed.json"))
    assert result.exit_code == 1
    assert "this plan is not sealed" in result.stderr          # anyone can write one in clear
    write_plan(doc, project.root / "printed.json")            # sealed, by someone with the key
    result, _ = apply_saved(project, str(project.root / "printed.json"))
    assert result.exit_code == 1
    assert "printed with redaction and holds no payloads" in result.stderr
    assert all(n == 1 for n in counts(project, ids).values())
    assert not project.state_path.exists()


def test_plan_saved_under_redaction_keeps_its_payloads_and_applies(project, ids):
    """--out under CI redacts the values shown, never the payloads apply needs."""
    plan = plan_to(project, "ci-plan.json", ci=True)
    doc = read_plan(plan)
    assert doc["redacted"] is True
    ct = next(e for e in plans.per_image_set(doc) if e["spec"] == "ct-small")
    assert ct["changes"][0]["after"].startswith("<redacted ")
    result, items = apply_saved(project, plan)
    assert result.exit_code == 0, result.stderr
    assert {i["status"] for i in items.values()} == {"applied"}


def test_plan_edited_by_hand_is_refused(project, ids):
    plan = plan_to(project)
    # Edited without the key: the ciphertext no longer authenticates.
    envelope = sealed_envelope(plan)
    flipped = bytearray(base64.b64decode(envelope["ciphertext"]))
    flipped[len(flipped) // 2] ^= 1
    envelope["ciphertext"] = base64.b64encode(bytes(flipped)).decode()
    original = open(plan).read()
    open(plan, "w").write(json.dumps(envelope))
    result, _ = apply_saved(project, plan)
    assert result.exit_code == 1
    assert "the plan was modified after it was written" in result.stderr
    # Edited by someone holding the key: the checksum inside still tells.
    open(plan, "w").write(original)
    doc = read_plan(plan)
    entry = _study_update_of(doc, "ct-small")
    assert CT_WANTED in entry["requests"][0]["updatableAttributes"]
    entry["requests"][0]["updatableAttributes"] = entry["requests"][0][
        "updatableAttributes"].replace(CT_WANTED, "EVIL^EDIT")
    write_plan(doc, plan)
    result, _ = apply_saved(project, plan)
    assert result.exit_code == 1
    assert "checksum mismatch" in result.stderr
    assert all(n == 1 for n in counts(project, ids).values())
