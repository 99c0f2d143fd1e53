"""Guardrails end to end: `limits` in reconciler.yaml stop a plan that changes too many image
sets or studies, or a protected attribute, before anything is written (no plan file saved, no
update sent); --allow-large / --allow-protected (or their environment variables) lift them for
one run, and the plan says so."""

from __future__ import annotations

import json


from apply_support import PATIENT_CHANGES_REFUSED
from plan_files import read_plan, write_plan


def _limits(project, **limits) -> None:
    project.write_config({**project.config, "limits": limits})


def _versions(project, ids) -> dict[str, int]:
    return {name: project.version_count(i) for name, i in ids.items()}


def test_a_plan_beyond_the_limits_is_printed_not_saved_and_nothing_is_written(project, ids):
    _limits(project, maxImageSetsChanged=2)
    before = _versions(project, ids)
    (project.root / "plan.json").write_text("an earlier plan")
    plan = project.run("plan", "--out", "plan.json", "--detailed-exitcode")
    assert plan.exit_code == 1
    assert "Plan: 3 image sets to update" in plan.stdout      # printed for review
    assert ("Limits: 3 image sets and 3 studies changed (maxImageSetsChanged 2).\n"
            "Limit exceeded: the plan changes 3 image sets, more than "
            "limits.maxImageSetsChanged (2) of reconciler.yaml allows") in plan.stdout
    assert ("Error: the plan changes 3 image sets, more than limits.maxImageSetsChanged (2)"
            in plan.stderr)
    assert "--allow-large" in plan.stderr and "nothing was written" in plan.stderr
    # No plan file: not this plan, nor an earlier one that could be applied by mistake.
    assert not (project.root / "plan.json").exists()
    assert "Removed plan.json, an earlier plan: this one is not saved." in plan.stderr

    apply = project.run("apply", "--auto-approve")
    assert apply.exit_code == 1 and "limits.maxImageSetsChanged (2)" in apply.stderr
    assert _versions(project, ids) == before and not project.state_path.exists()

    markdown = project.run("plan", "--format", "markdown", ci=True)
    assert markdown.exit_code == 1 and "> :x: Limit exceeded: the plan changes 3" in \
        markdown.stdout

    # Lifted for one run: saved, and the plan says it was lifted.
    allowed = project.run("plan", "--out", "plan.json", "--allow-large")
    assert allowed.exit_code == 0, allowed.stderr
    assert "lifted for this run: large." in allowed.stdout
    doc = read_plan(project.root / "plan.json")
    assert doc["limits"] == {"image_sets_changed": 3, "studies_changed": 3,
                             "max_image_sets_changed": 2, "max_studies_changed": None,
                             "protected_changed": [], "allowed": ["large"], "exceeded": []}
    assert project.run("apply", "plan.json").exit_code == 0


def test_studies_are_limited_too_and_the_environment_lifts_it(project, ids):
    _limits(project, maxStudiesChanged=1)
    plan = project.run("plan")
    assert plan.exit_code == 1
    assert "the plan changes 3 studies, more than limits.maxStudiesChanged (1)" in plan.stderr
    lifted = project.run("plan", "--detailed-exitcode", env={"RECONCILER_ALLOW_LARGE": "true"})
    assert lifted.exit_code == 2 and "lifted for this run: large" in lifted.stdout


def test_a_protected_attribute_needs_its_own_flag(project, ids):
    # ct-small changes FIRST, sc-deid SECOND; where the reading refuses every Patient change to
    # a primary image set, the example specs carry no Patient block, and Study elements stand in.
    first, second = (("AccessionNumber", "ReferringPhysicianName") if PATIENT_CHANGES_REFUSED
                     else ("PatientName", "PatientID"))
    _limits(project, protectedAttributes=[first, second, "IssuerOfPatientID"])
    plan = project.run("plan", "--allow-large")
    assert plan.exit_code == 1
    assert (f"the plan changes {first}, protected by limits.protectedAttributes of "
            "reconciler.yaml (ct-small: image set") in plan.stderr
    assert f"pass --allow-protected {first}" in plan.stderr
    assert f"pass --allow-protected {second}" in plan.stderr
    assert "IssuerOfPatientID" not in plan.stderr                  # protected, not changed
    one = project.run("plan", "--allow-protected", first)
    assert one.exit_code == 1 and f"--allow-protected {second} " in one.stderr
    assert f"--allow-protected {first} " not in one.stderr
    ok = project.run("plan", "--allow-protected", first, "--allow-protected", second,
                     "--out", "plan.json")
    assert ok.exit_code == 0, ok.stderr
    both = ", ".join(sorted((first, second)))
    assert f"protected attributes changed: {both}; lifted for this run: {both}." in ok.stdout
    by_env = project.run("plan", env={"RECONCILER_ALLOW_PROTECTED": f"{second} {first}"})
    assert by_env.exit_code == 0, by_env.stderr


def test_apply_refuses_a_plan_document_that_went_beyond_its_limits(project, ids):
    """`plan --json` prints a plan beyond the limits (for review); sealing that output with
    the project's key (someone who holds it) and applying it must not get around them."""
    _limits(project, maxImageSetsChanged=0)
    printed = project.run("plan", "--json", "--no-redact")
    assert printed.exit_code == 1
    write_plan(json.loads(printed.stdout), project.root / "sneaky.json")
    before = _versions(project, ids)
    result = project.run("apply", "sneaky.json")
    assert result.exit_code == 1
    assert "limits.maxImageSetsChanged (0)" in result.stderr
    assert _versions(project, ids) == before


def test_forgetting_counts_against_the_limit(project, applied):
    """A specs path that moved would forget every record at once: the limit catches it."""
    _limits(project, maxImageSetsChanged=1)
    project.write_config({**project.config, "specs": ["elsewhere"]})
    (project.root / "elsewhere").mkdir()
    plan = project.run("plan")
    assert plan.exit_code == 1
    assert "3 to forget" in plan.stdout
    assert "the plan changes 3 image sets, more than limits.maxImageSetsChanged (1)" \
        in plan.stderr
    assert len(project.state()["specs"]) == 3
