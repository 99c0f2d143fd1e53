"""The saved plan: a versioned JSON document, the only thing renderers and apply read.

As in Terraform, computation produces a plan, the plan is serialised, and every renderer
(human, JSON, Markdown) works from the serialised document, so ``plan`` and ``show PLANFILE``
print the same thing. The document follows ``schemas/plan.v1.schema.json``; a ``checksum``
over its canonical JSON detects a plan edited by hand. The file holds the exact request
payloads (apply needs them), so it is written sealed with the project's key
(:mod:`.planfile`) and with mode 0600; before/after values are stored already redacted when
redaction is on.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from .. import __version__
from ..core.canonical import large_digest
from ..core.errors import PlanFileError
from ..core.packed import PackedList
from ..spec.schemacheck import validator
from ..states.files import atomic_write
from ..states.keys import KeySource
from .planfile import open_plan, seal_plan
from .types import MovedEntry, PlanDocument, PlanEntry, PlanLimits, RemovedEntry, StudyUpdate

FORMAT_VERSION = "1"
SCHEMA_FILE = "plan.v1.schema.json"
ACTION_UPDATE, ACTION_NOOP, ACTION_ERROR = "update", "no-op", "error"
ACTION_FORGET, ACTION_REVERT = "forget", "revert"      # entries of ``removed``


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("reconciler.schemas").joinpath(SCHEMA_FILE).read_text("utf-8"))


def checksum(doc: PlanDocument) -> str:
    """sha256 of the canonical JSON of every member but the checksum itself."""
    return "sha256:" + large_digest({k: v for k, v in doc.items() if k != "checksum"})


def new_plan(entries: list[PlanEntry], *, redacted: bool,
             lineage: str | None = None, serial: int | None = None,
             groups: list[StudyUpdate] | None = None,
             removed: list[RemovedEntry] | None = None,
             moved: list[MovedEntry] | None = None) -> PlanDocument:
    """Assemble a plan document from per-image-set entries and study updates (see the schema
    for their form). The summary counts image sets (each member of a group counts) and
    requests (a group sends one); ``removed`` and ``moved`` (what leaves the specs, renamed
    specs) are added, with their counts, only when there are any."""
    groups = groups or []
    summary = {"update": 0, "unchanged": 0, "error": 0, "attributes_changed": 0, "requests": 0}
    counted = set()          # (spec, image set) of the updates, when a group may repeat one
    for e in entries:        # one pass, one at a time: they may be packed (100,000 of them)
        if e["action"] == ACTION_UPDATE:
            summary["update"] += 1
            summary["attributes_changed"] += len(e["changes"])
            summary["requests"] += len(e["requests"])
            if groups:
                counted.add((e["spec"], e["image_set_id"]))
        elif e["action"] == ACTION_NOOP:
            summary["unchanged"] += 1
        elif e["action"] == ACTION_ERROR:
            summary["error"] += 1
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "reconciler_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "redacted": redacted,
        "state": {"lineage": lineage, "serial": serial},
        "summary": summary,
        "image_sets": entries,
        "groups": groups,
    }
    for group in groups:
        members = group["members"]
        summary["update"] += sum((m["spec"], m["image_set_id"]) not in counted for m in members)
        summary["attributes_changed"] += sum(
            len(m["changes"]) if "changes" in m else len(group["changes"]) for m in members)
        summary["requests"] += len(group["requests"])
    if removed:
        doc["removed"] = removed
        for action in (ACTION_FORGET, ACTION_REVERT):
            doc["summary"][action] = sum(1 for e in removed if e["action"] == action)
        doc["summary"]["error"] += sum(1 for e in removed if e["action"] == ACTION_ERROR)
    if moved:
        doc["moved"] = moved
        doc["summary"]["move"] = sum(len(m["image_sets"]) for m in moved)
    doc["checksum"] = checksum(doc)
    return doc


def note_limits(doc: PlanDocument, section: PlanLimits) -> PlanDocument:
    """Add what the plan changes against reconciler.yaml's ``limits``."""
    doc["limits"] = section
    doc["checksum"] = checksum(doc)
    return doc


def has_changes(doc: PlanDocument) -> bool:
    """Whether applying the plan changes anything: an image set or the state (a forget, a
    move). What ``--detailed-exitcode`` exits 2 for."""
    s = doc["summary"]
    return bool(s["update"] or doc.get("groups") or s.get("forget") or s.get("revert")
                or s.get("move"))


def note_not_reread(doc: PlanDocument, count: int) -> PlanDocument:
    """Say in the document (``not_reread``) how many image sets the plan did not read because
    the state verified them at the version SearchImageSets lists as latest, which may lag.
    Nothing is added when every image set was read."""
    if count:
        doc["not_reread"] = {
            "count": count,
            "note": (f"{count} image set{'s' if count != 1 else ''} not re-read: the state "
                     f"verified {'them' if count != 1 else 'it'} at the version SearchImageSets "
                     f"lists as latest, and the search index may lag behind a recent change; "
                     f"plan --read-all reads them (apply and plan --out always do)")}
        doc["checksum"] = checksum(doc)
    return doc


@cache
def _item_validator(key: str) -> Draft202012Validator:
    """The validator of an item of the plan's list ``key`` (refs inlined, as the plan's)."""
    whole = validator(SCHEMA_FILE).schema
    return Draft202012Validator({**whole["properties"][key]["items"],
                                 "$defs": whole.get("$defs", {})})


def _schema_errors(doc: dict[str, Any]) -> Iterator[ValidationError]:
    """The plan's schema errors. A list held packed (a loaded plan) is checked an item at a
    time, each decoded on its own, with the errors at the same paths."""
    properties = validator(SCHEMA_FILE).schema["properties"]
    packed = {k: v for k, v in doc.items()
              if isinstance(v, PackedList) and "items" in properties.get(k, {})}
    whole = {k: list(v) if isinstance(v, PackedList) and k not in packed else v
             for k, v in doc.items()}
    yield from validator(SCHEMA_FILE).iter_errors({**whole, **{k: [] for k in packed}})
    for key, items in packed.items():
        for i, item in enumerate(items):
            for error in _item_validator(key).iter_errors(item):
                error.path.extendleft((i, key))   # reversed: the path is key/i/...
                yield error


def validate(doc: Any, source: str = "plan") -> PlanDocument:
    """Schema, format version and checksum; raises :class:`PlanFileError` naming the problem."""
    if not isinstance(doc, dict):
        raise PlanFileError(f"{source}: not a reconciler plan (expected a JSON object)")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise PlanFileError(f"{source}: unsupported plan format_version {version!r} "
                            f"(this reconciler reads {FORMAT_VERSION!r})")
    try:
        problems = sorted(_schema_errors(doc), key=lambda e: list(e.absolute_path))
    except ValueError:          # a packed item that is not JSON: decoded here the first time
        raise PlanFileError(f"{source}: the sealed plan does not hold a plan document") from None
    if problems:
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise PlanFileError(f"{source}: not a valid plan at {where}: {first.message}"
                            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    for i, group in enumerate(doc.get("groups", [])):
        first = group["members"][0]
        if group["leader"] != first["image_set_id"] or first.get("peer"):
            raise PlanFileError(f"{source}: not a valid plan at groups/{i}: the leader is not "
                                f"the image set of its first member, a targeted one")
    if doc.get("checksum") != checksum(doc):
        raise PlanFileError(f"{source}: checksum mismatch: the plan was modified after it was "
                            f"written; run plan again")
    return doc


def save(doc: PlanDocument, path: str | os.PathLike, keys: KeySource) -> None:
    """Seal with ``keys`` and write atomically (temp file, fsync, rename, directory fsync)
    with mode 0600: the file holds payloads."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, seal_plan(doc, keys), mode=0o600)


def load(path: str | os.PathLike, keys: KeySource) -> PlanDocument:
    """Open a saved plan with ``keys`` and validate it; PlanFileError (or
    KeyUnavailableError, naming the key source) when it cannot be used."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PlanFileError(f"{source}: no such plan file") from None
    except OSError as exc:
        raise PlanFileError(f"{source}: cannot read the plan ({type(exc).__name__})") from exc
    return validate(open_plan(data, keys, source), source)


def redact_values(doc: PlanDocument, show) -> PlanDocument:
    """A copy whose before/after values went through ``show(key, value, vr, private)`` (a
    :meth:`reconciler.dicom.redact.Redactor.show`), for printing an unredacted plan where redaction
    is now on."""
    def shown(item: dict[str, Any]) -> dict[str, Any]:
        for entry in [item, *item.get("members", [])]:
            for change in entry.get("changes", []):
                for side in ("before", "after"):
                    change[side] = show(change["key"], change[side], change["vr"],
                                        change["private"])
        return item

    view = _copied(doc, shown, shown)
    view["redacted"] = True
    if "removed" in view:
        view["removed"] = [shown(e) for e in view["removed"]]      # (a copy already)
    view["checksum"] = checksum(view)
    return view


def public_view(doc: PlanDocument) -> PlanDocument:
    """What may be printed when redaction is on: payloads and before-digests hold values, so
    they are replaced by their size and hash. The result is still a valid plan document."""
    if not doc.get("redacted"):
        return doc
    view = _copied(doc, _public_entry, _public_group)
    view["checksum"] = checksum(view)
    return view


def _copied(doc: PlanDocument, entry, group) -> PlanDocument:
    """A copy of ``doc`` with ``entry`` made of a copy of each of its entries and ``group`` of
    each study update (each may change the copy it is given), one at a time and packed: a
    plan of 100,000 image sets is not copied whole."""
    view = {k: copy.deepcopy(v) for k, v in doc.items() if k not in ("image_sets", "groups")}
    view["image_sets"] = PackedList.of((entry(copy.deepcopy(e)) for e in doc["image_sets"]),
                                       canonical=False)
    if "groups" in doc:
        view["groups"] = PackedList.of((group(copy.deepcopy(g)) for g in doc["groups"]),
                                       canonical=False)
    return {k: view[k] for k in doc}              # the document's order of members


def _public_entry(entry: PlanEntry) -> PlanEntry:
    entry["before_digest"] = None
    _public_requests(entry["requests"])
    return entry


def _public_group(group: StudyUpdate) -> StudyUpdate:
    for member in group["members"]:
        member["before_digest"] = None
    _public_requests(group["requests"])
    return group


def _public_requests(requests: list[dict[str, Any]]) -> None:
    for request in requests:
        for key in ("updatableAttributes", "removableAttributes"):
            text = request.get(key)
            if isinstance(text, str):
                request[key] = {"redacted": True, "bytes": len(text.encode("utf-8"))}


def is_applicable(doc: PlanDocument) -> bool:
    """A plan printed with redaction lacks its payloads and cannot be applied."""
    return not any(isinstance(r.get(k), dict)
                   for e in chain(doc["image_sets"], doc.get("groups", []))  # one at a time
                   for r in e["requests"]
                   for k in ("updatableAttributes", "removableAttributes"))


def per_image_set(doc: PlanDocument) -> Iterator[PlanEntry]:
    """Every planned (spec, image set), as entries: those of ``image_sets`` (less those that
    follow a study update they are a member of: one item each), then each member of each
    study update with its changes (and the request on the leader's member only, listed
    first), and ``group`` naming the study. Apply reports, records and checks them one by
    one. Made as they are read: a plan of 100,000 image sets is not copied whole."""
    listed = {(m["spec"], m["image_set_id"])
              for group in doc.get("groups", []) for m in group["members"]}
    for entry in doc["image_sets"]:
        if not (entry.get("after_study") and (entry["spec"], entry["image_set_id"]) in listed):
            yield entry
    for group in doc.get("groups", []):
        for i, member in enumerate(group["members"]):
            yield {**member, "datastore_id": group["datastore_id"], "action": ACTION_UPDATE,
                   "changes": member.get("changes", group["changes"]), "group": group["study"],
                   "requests": group["requests"] if i == 0 else []}


def count_per_image_set(doc: PlanDocument) -> int:
    """How many items :func:`per_image_set` gives."""
    return sum(1 for _ in per_image_set(doc))
