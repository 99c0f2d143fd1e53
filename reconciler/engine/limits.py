"""Guardrails of a plan: ``limits`` in reconciler.yaml (docs/plan-and-apply.md, limits).

A plan that changes more image sets or studies than ``maxImageSetsChanged`` /
``maxStudiesChanged``, or changes a keyword of ``protectedAttributes`` (PatientID …), is
stopped before anything is written: ``plan`` prints it and exits 1 without saving it, ``apply``
without a saved plan stops before asking, and ``apply PLANFILE`` refuses a plan that says it
went beyond them. ``--allow-large`` / ``--allow-protected KEYWORD`` lift them for one run;
what was lifted is written into the plan (``limits.allowed``), so the review shows it.

What counts: an image set is changed when the plan updates it (a member of a study update
too, peers included), reverts it or forgets it (forgetting is a change of what is managed: a
typo in a selector, or a specs path that moved, would forget everything at once); a study is
changed when the plan writes to one of its image sets (updates and reverts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..core import errors
from ..dicom.paths import parse
from ..documents import plans
from ..documents.types import PlanDocument, PlanLimits
from ..spec.lifecycle import Limits

LARGE = "large"


@dataclass(frozen=True)
class Allowances:
    """What one run lifts: ``--allow-large`` and ``--allow-protected KEYWORD``."""

    large: bool = False
    protected: frozenset[str] = field(default_factory=frozenset)


StudyOf = Callable[[str], "str | None"]
"""image set id → the key of its study (``study-<hash>``) as the planner saw it, or None."""


def measure(doc: PlanDocument, limits: Limits, allow: Allowances,
            study_of: StudyOf) -> PlanLimits:
    """The ``limits`` section of a plan document: what it changes against ``limits``, what
    the run lifted, and what goes beyond and was not lifted."""
    changed: set[tuple[str, str]] = set()
    studies: set[str] = set()
    keys: dict[str, list[str]] = {}       # protected keyword → where it changes

    def study(image_set_id: str, known: str | None = None) -> None:
        studies.add(known or study_of(image_set_id) or f"image-set-{image_set_id}")

    def note(changes, where: str, extra: list[str] = ()) -> None:
        for key in [c["key"] for c in changes] + [parse(p).key for p in extra]:
            if key in limits.protected:
                keys.setdefault(key, [])
                if where not in keys[key]:
                    keys[key].append(where)

    for entry in doc["image_sets"]:
        if entry["action"] == plans.ACTION_UPDATE:
            changed.add((entry["datastore_id"], entry["image_set_id"]))
            study(entry["image_set_id"])
            note(entry["changes"], f"{entry['spec']}: image set {entry['image_set_id']}")
    for group in doc.get("groups", []):
        for member in group["members"]:
            changed.add((group["datastore_id"], member["image_set_id"]))
            note(member.get("changes", group["changes"]),
                 f"{member['spec']}: image set {member['image_set_id']}")
        study(group["leader"], group["study"])
    for entry in doc.get("removed", []):
        if entry["action"] == plans.ACTION_ERROR:
            continue
        changed.add((entry["datastore_id"], entry["image_set_id"]))
        if entry["action"] == "revert":
            study(entry["image_set_id"], entry["study"])
            note(entry["changes"], f"{entry['spec']}: image set {entry['image_set_id']} "
                                   f"(revert)", entry["other_changes"])

    allowed = ([LARGE] if allow.large else []) + sorted(k for k in allow.protected
                                                        if k in limits.protected)
    exceeded = []
    for count, most, what in ((len(changed), limits.max_image_sets, "image sets"),
                              (len(studies), limits.max_studies, "studies")):
        if most is not None and count > most and not allow.large:
            key = "maxImageSetsChanged" if what == "image sets" else "maxStudiesChanged"
            exceeded.append(f"the plan changes {count} {what}, more than limits.{key} ({most}) "
                            f"of reconciler.yaml allows: check the specs (a selector that "
                            f"finds more than meant, a spec path that moved), or pass "
                            f"--allow-large to go ahead with this plan")
    for key in sorted(keys):
        if key not in allow.protected:
            where = keys[key]
            shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3
                                            else "")
            exceeded.append(f"the plan changes {key}, protected by limits.protectedAttributes "
                            f"of reconciler.yaml ({shown}): pass --allow-protected {key} to go "
                            f"ahead with this plan")
    return {"image_sets_changed": len(changed), "studies_changed": len(studies),
            "max_image_sets_changed": limits.max_image_sets,
            "max_studies_changed": limits.max_studies,
            "protected_changed": sorted(keys), "allowed": allowed, "exceeded": exceeded}


def enforce(doc: PlanDocument) -> None:
    """Raise :class:`errors.LimitError` when the plan went beyond its limits (as its
    ``limits`` section says)."""
    section = doc.get("limits")
    if section and section["exceeded"]:
        raise errors.LimitError("; ".join(section["exceeded"]) + "; nothing was written")
