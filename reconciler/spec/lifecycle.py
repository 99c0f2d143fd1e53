"""The lifecycle sections of ``reconciler.yaml``: what happens to image sets that leave the
specs (``removed``), specs that were renamed (``moved``), and the guardrails of a plan
(``limits``). docs/specs.md describes them; docs/plan-and-apply.md what plan and apply do.

* ``removed``: per spec name, ``action: forget`` (drop its records from the state, leave the
  metadata as it is: also what happens to a spec listed nowhere) or ``action: revert`` (revert
  each image set to the version recorded before our first apply, then forget it). It applies
  to a spec deleted from the specs and to the image sets a spec no longer covers.
* ``moved``: ``from`` → ``to``, a spec renamed: its records (versions, hashes, what rollback
  goes back to) follow it instead of being forgotten under the old name. Chains resolve
  (``a → b``, ``b → c``: ``a`` goes straight to ``c``), as Terraform's ``moved`` blocks do.
* ``limits``: the most image sets and studies one plan may change, and the attributes a
  plan may change only with an explicit flag (``--allow-large``, ``--allow-protected``).

The JSON Schema (``schemas/config.v1.schema.json``) checks the structure; :func:`check` what it
cannot say (duplicates, cycles, keywords), in the same ``FILE:LINE:COLUMN: PATH: message`` form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import Diagnostic
from ..dicom import dictionary
from .schemacheck import is_flagged

FORGET, REVERT = "forget", "revert"


@dataclass(frozen=True)
class Removal:
    """``removed[i]``: what apply does with the image sets of ``spec`` that leave the specs."""

    spec: str
    action: str                  # forget | revert
    reason: str | None = None
    where: str = ""              # "reconciler.yaml:12" for messages


@dataclass(frozen=True)
class Move:
    """``moved[i]``: the spec once named ``source`` is now named ``target``."""

    source: str
    target: str
    where: str = ""


@dataclass(frozen=True)
class Limits:
    """``limits``: None means no limit."""

    max_image_sets: int | None = None
    max_studies: int | None = None
    protected: tuple[str, ...] = ()   # keywords a plan changes only with --allow-protected

    @property
    def configured(self) -> bool:
        return (self.max_image_sets is not None or self.max_studies is not None
                or bool(self.protected))


@dataclass(frozen=True)
class Lifecycle:
    removed: tuple[Removal, ...] = ()
    moved: tuple[Move, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def removal(self, spec_name: str) -> Removal | None:
        """The ``removed`` entry of a spec name, or None (which means: forget)."""
        return next((r for r in self.removed if r.spec == spec_name), None)

    def renames(self) -> dict[str, Move]:
        """Every old name → the move that takes it to its final name (chains resolved: the
        returned moves carry the final ``target``)."""
        step = {m.source: m for m in self.moved}
        out = {}
        for move in self.moved:
            final, seen = move.target, {move.source}
            while final in step and final not in seen:
                seen.add(final)
                final = step[final].target
            out[move.source] = Move(move.source, final, move.where)
        return out


def _name(doc: Any, data: Any, path: tuple) -> Any:
    """A spec name as written: YAML may have read ``spec: 2024`` as a number."""
    text = doc.source_text(path)
    return text if text is not None else data


def coerce(doc: Any, data: dict[str, Any]) -> None:
    """Names that YAML resolved to numbers or booleans become the strings written."""
    for section, keys in (("removed", ("spec",)), ("moved", ("from", "to"))):
        items = data.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict):
                for key in keys:
                    if key in item:
                        item[key] = _name(doc, item[key], (section, i, key))


def check(doc: Any, data: dict[str, Any], flagged: set[tuple]) -> list[Diagnostic]:
    """What the schema cannot say about ``removed``, ``moved`` and ``limits``."""
    problems: list[Diagnostic] = []

    def entries(section: str, keys: tuple[str, ...]):
        items = data.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and not is_flagged((section, i), flagged) and all(
                    isinstance(item.get(k), str) and not is_flagged((section, i, k), flagged)
                    for k in keys):
                yield i, item

    def line(path: tuple) -> int:
        return doc.position(path).line

    sources: dict[str, int] = {}
    targets: dict[str, int] = {}
    for i, item in entries("moved", ("from", "to")):
        source, target = item["from"], item["to"]
        if source == target:
            problems.append(doc.diagnostic(("moved", i, "to"), "a spec cannot be moved to its own "
                                           "name"))
            continue
        if source in sources:
            problems.append(doc.diagnostic(("moved", i, "from"), f"spec {source} is moved twice "
                                           f"(first at line {sources[source]})"))
        elif target in targets:
            problems.append(doc.diagnostic(("moved", i, "to"), f"two specs cannot be moved to "
                                           f"one name: {target} (first at line {targets[target]})"))
        sources.setdefault(source, line(("moved", i)))
        targets.setdefault(target, line(("moved", i)))
    step = {item["from"]: item["to"] for _, item in entries("moved", ("from", "to"))}
    for i, item in entries("moved", ("from", "to")):
        seen, name = [item["from"]], item["to"]
        while name in step and name not in seen:
            seen.append(name)
            name = step[name]
        if name == item["from"] and len(seen) > 1:
            problems.append(doc.diagnostic(("moved", i), "the moves form a cycle: "
                                           + " → ".join([*seen, name])))

    named: dict[str, int] = {}
    for i, item in entries("removed", ("spec",)):
        spec = item["spec"]
        if spec in named:
            problems.append(doc.diagnostic(("removed", i, "spec"), f"spec {spec} is listed twice "
                                           f"(first at line {named[spec]})"))
            continue
        named[spec] = line(("removed", i))
        if spec in sources:
            problems.append(doc.diagnostic(("removed", i, "spec"), f"spec {spec} was renamed "
                                           f"(moved at line {sources[spec]}): name the new name"))

    limits = data.get("limits")
    keywords = limits.get("protectedAttributes") if isinstance(limits, dict) else None
    for j, keyword in enumerate(keywords if isinstance(keywords, list) else []):
        path = ("limits", "protectedAttributes", j)
        if not isinstance(keyword, str) or is_flagged(path, flagged):
            continue
        if not dictionary.keyword_exists(keyword):
            hint = dictionary.suggest_keyword(keyword)
            problems.append(doc.diagnostic(path, f"unknown DICOM keyword {keyword}"
                                           + (f"; did you mean {hint}?" if hint else "")))
    return problems


def build(data: dict[str, Any], file: str, doc: Any = None) -> Lifecycle:
    """The sections of a valid config (``check`` and the schema found no problem)."""
    def where(path: tuple) -> str:
        return f"{file}:{doc.position(path).line}" if doc is not None else file

    removed = tuple(Removal(item["spec"], item["action"], item.get("reason"),
                            where(("removed", i)))
                    for i, item in enumerate(data.get("removed", [])))
    moved = tuple(Move(item["from"], item["to"], where(("moved", i)))
                  for i, item in enumerate(data.get("moved", [])))
    section = data.get("limits", {})
    limits = Limits(max_image_sets=section.get("maxImageSetsChanged"),
                    max_studies=section.get("maxStudiesChanged"),
                    protected=tuple(section.get("protectedAttributes", ())))
    return Lifecycle(removed, moved, limits)
