"""Planning study updates (:mod:`.study_updates`) while a plan reads its image sets.

A plan reads its image sets in parallel and gets their entries back in the specs' order
(:func:`reconciler.engine.planner.make_plan`). Each entry that leaves Patient/Study changes to
a study update joins its study; the study update is made once every entry it may involve is
in (:class:`StudyPlanner`):

* a study a selector on ``DICOMStudyInstanceUID`` alone listed (the table matched on study
  UIDs, the common case) is planned as soon as the entries of every image set of that listing
  are in: the plan knows from the start where the last of them comes. What the study needed
  (its entries' facts, the deferred changes, its listing, the entries its update absorbs) is
  freed then, so a plan of 100,000 studies never holds them all;
* every other study is planned once all entries are in, after one search each for its primary
  image sets (run in parallel), as before.

A study planned early uses, as primaries, the image sets its listing showed, exactly as one
planned at the end does. What only the early one can meet: an image set of that study the
listing did not show (the search index lags behind an import) read *after* the study was
planned and leaving a study-level change of its own. Its study update is then withdrawn: each
of its specs gets an error saying to plan again (a plan that made it at the end would have
merged it; nothing is written either way until the plan is applied, and apply checks the
study's primary image sets again just before the request).
"""

from __future__ import annotations

import heapq
import itertools
import json
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core import errors
from ..core.packed import PackedList
from ..core.pools import bounded
from ..data.service_facts import PATIENT, STUDY
from ..dicom.redact import Redactor
from ..healthimaging.api import HealthImaging, ImageSetSummary
from ..spec.types import DesiredAttributes
from .diff import Change, ImageSetProblem, diff
from .entries import before_digest, change_entry
from .payloads import PayloadTooLarge
from .reading import Assignment, study_key
from .study_facts import Keep, StudyFacts, StudyIndex, facts_of
from .study_updates import (
    StudyRefused, listed_studies, member_error, primary_summaries, refuse_entry, study_request)

Key = tuple[str, str]          # (data store, StudyInstanceUID)
Entry = dict[str, Any]


@dataclass
class _Study:
    datastore_id: str
    uid: str
    entries: dict[int, Entry] = field(default_factory=dict)   # entries that defer changes, by
                                                              # their index in the plan's


_PACKED = object()


class _Entries:
    """A plan's entries in order, packed as they come (:class:`PackedList`: ~0.7 KB of dict
    an entry, ~0.1 KB packed; a plan over a populated state of 100,000 image sets held them
    all as dicts). What a study update changes of them afterwards is kept beside:
    ``held[index]`` is the entry as a dict while a study not planned yet may still change it
    in place (it is not packed then), its text once changed, or None once dropped."""

    __slots__ = ("packed", "held")

    def __init__(self) -> None:
        self.packed = PackedList(canonical=False)     # as made: plan --json prints them so
        self.held: dict[int, Entry | bytes | None] = {}

    def add(self, entry: Entry, live: bool = False) -> int:
        index = len(self.packed)
        if live:
            self.packed.append(None)
            self.held[index] = entry
        else:
            self.packed.append(entry)
        return index

    def __getitem__(self, index: int) -> Entry | None:
        """The entry (a new dict, unless it is held live), or None if it was dropped."""
        held = self.held.get(index, _PACKED)
        if held is _PACKED:
            return self.packed[index]
        return json.loads(held) if isinstance(held, bytes) else held

    def changed(self, index: int, entry: Entry) -> None:
        """``entry``, read at ``index`` and changed, is what that entry now is."""
        if not isinstance(self.held.get(index), dict):
            self.held[index] = self.packed.encode(entry)

    def rest(self, index: int) -> None:
        """No study will change the entry in place any more: keep it as text."""
        held = self.held.get(index)
        if isinstance(held, dict):
            self.held[index] = self.packed.encode(held)

    def drop(self, index: int) -> None:
        self.held[index] = None

    def changes(self) -> list[tuple[int, Entry]]:
        """The entries changed since they came (not those dropped), with their indexes."""
        return [(i, self[i]) for i, held in list(self.held.items()) if held is not None]

    def finish(self) -> PackedList:
        if not self.held:
            return self.packed

        def texts():
            for index, text in enumerate(self.packed.texts()):
                held = self.held.get(index, _PACKED)
                if held is _PACKED:
                    yield text
                elif held is not None:
                    yield held if isinstance(held, bytes) else self.packed.encode(held)
        return PackedList(texts(), canonical=False)


def _merge(study: _Study, studies: StudyIndex) -> DesiredAttributes:
    """The Patient/Study attributes every deferring entry asks for, merged."""
    merged = DesiredAttributes()
    owner: dict[tuple[str, str], str] = {}
    for entry in study.entries.values():
        spec, changes = studies.deferred(entry["spec"], entry["image_set_id"])
        wanted = {(c.level, c.key) for c in changes}
        for level, declared, target in ((PATIENT, spec.attributes.patient, merged.patient),
                                        (STUDY, spec.attributes.study, merged.study)):
            for key, attr in declared.items():
                if (level, key) not in wanted:
                    continue
                if key in target and target[key].value != attr.value:
                    raise StudyRefused(f"specs {owner[(level, key)]} and {spec.name} want "
                                       f"different values of {level}.{key} for the primary "
                                       f"image sets of one study, which one study-wide update "
                                       f"cannot give")
                target[key], owner[(level, key)] = attr, spec.name
    return merged


def _peer_facts(hi: HealthImaging, datastore_id: str, summary: ImageSetSummary,
                keep: Keep | None) -> StudyFacts:
    try:
        metadata = hi.get_metadata(datastore_id, summary.image_set_id, summary.version)
    except errors.ServiceError as exc:
        raise errors.about(exc, f"image set {summary.image_set_id} (a primary image set of "
                                f"the same study)") from None
    return facts_of(True, summary.version, metadata, keep)


def _member_changes(merged: DesiredAttributes, facts: StudyFacts, image_set_id: str
                    ) -> list[Change]:
    document = {"Patient": {"DICOM": facts.patient or {}}, "Study": {"DICOM": facts.study or {}}}
    return diff(merged, document, image_set_id)


class StudyPlanner:
    """Turns the deferred Patient/Study changes of a plan's entries into study updates, fed
    the entries in the specs' order (:meth:`add`), as the module's text says. :meth:`finish`
    returns the entries that stay (with ``after_study`` where they must wait for one) and
    the updates, both packed, in the order of the specs that lead them. An entry a study
    update absorbs is dropped when its study is planned.

    Entries are packed as they come (:class:`_Entries`), and indexed by image set as
    positions: an entry no study has changed yet is read back only when a study update
    involves its image set (a primary image set read, or not read at all because the state
    shows it unchanged, may be a member of a study planned later)."""

    def __init__(self, studies: StudyIndex, hi: HealthImaging, redactor: Redactor,
                 assignments: list[Assignment], state_serial: Callable | None = None,
                 parallelism: int = 1):
        self.studies, self.hi, self.redactor = studies, hi, redactor
        self.state_serial, self.parallelism = state_serial, parallelism
        self.listed: dict[Key, tuple[ImageSetSummary, ...]] = listed_studies(assignments)
        # Where the last entry of each image set comes (a listed study is due after the last
        # of its image sets'): only when some study was listed.
        self.last: dict[str, int] = ({a.image_set_id: i for i, a in enumerate(assignments)}
                                     if self.listed else {})
        self.entries = _Entries()
        # image set id -> the index of its entry (a list of them when it has several)
        self.by_image_set: dict[str, int | list[int]] = {}
        self.by_study: dict[Key, _Study] = {}       # the studies not planned yet, in order
        self.due: list[tuple[int, int, Key]] = []   # (entries added before it is due, n, key)
        # The updates made, packed as they are made (a plan of 100,000 studies holds them all
        # until it is written), the index of the entry leading each, and those withdrawn.
        self.made = PackedList(canonical=False)
        self.leaders = array("q")
        self.withdrawn: set[int] = set()
        self.early: dict[Key, int | None] = {}      # planned before the end: index in made
        self.added = 0                              # entries added (one per assignment)
        self._order = itertools.count()

    def add(self, entry: Entry) -> None:
        """The next entry, in the order of the assignments."""
        facts = self.studies.get(entry["image_set_id"]) if entry["image_set_id"] else None
        key = self._study_of(entry, facts)
        joins = key is not None and key not in self.early
        index = self.entries.add(entry, live=joins)
        if entry["image_set_id"]:
            self._index(entry["image_set_id"], index)
        if key is not None and not joins:
            self._withdraw(key, index, entry)
        elif key is not None:
            study = self.by_study.get(key)
            if study is None:
                study = self.by_study[key] = _Study(*key)
                found = self.listed.get(key)
                if found is not None:
                    last = max((self.last.get(s.image_set_id, self.added) for s in found),
                               default=self.added)
                    heapq.heappush(self.due, (max(last, self.added), next(self._order), key))
            study.entries[index] = entry
        while self.due and self.due[0][0] <= self.added:
            self._plan(heapq.heappop(self.due)[2], early=True)
        self.added += 1

    def finish(self) -> tuple[PackedList, PackedList]:
        keys = list(self.by_study)
        self.listed.update(_search_studies(self.hi, [k for k in keys if k not in self.listed],
                                           self.parallelism))
        for key in keys:
            self._plan(key)
        entries = self.entries.finish()
        # In the order of the specs that lead them. Studies planned early come in that order
        # unless their image sets interleave; then (only then) they are unpacked to be sorted.
        if not self.withdrawn and all(a <= b for a, b in itertools.pairwise(self.leaders)):
            return entries, self.made
        order = sorted(range(len(self.leaders)), key=self.leaders.__getitem__)
        texts = list(self.made.texts())
        return entries, PackedList((texts[i] for i in order if i not in self.withdrawn),
                                   canonical=False)

    def _index(self, image_set_id: str, index: int) -> None:
        had = self.by_image_set.get(image_set_id)
        if had is None:
            self.by_image_set[image_set_id] = index
        elif isinstance(had, int):
            self.by_image_set[image_set_id] = [had, index]
        else:
            had.append(index)

    def _of(self, image_set_id: str) -> list[tuple[int, Entry]]:
        """The entries of an image set not dropped, with their indexes, in order."""
        had = self.by_image_set.get(image_set_id)
        at = () if had is None else (had,) if isinstance(had, int) else had
        return [(i, entry) for i in at if (entry := self.entries[i]) is not None]

    def _study_of(self, entry: Entry, facts: StudyFacts | None) -> Key | None:
        """The study an entry leaves changes to, if it does (``facts``: its image set's)."""
        if entry["error"] or facts is None or facts.study_uid is None \
                or self.studies.deferred(entry["spec"], entry["image_set_id"]) is None:
            return None
        return (entry["datastore_id"], facts.study_uid)

    def _plan(self, key: Key, early: bool = False) -> None:
        # What a study needed goes once it is planned (its facts, its listing, the entries
        # its update absorbs), and its update is kept packed: at 100,000 image sets these
        # are most of what the plan holds.
        study = self.by_study.pop(key)
        if early:
            self.early[key] = None
        group = None
        try:
            group = _plan_study(study, self._of, self.studies, self.hi, self.redactor,
                                self.listed, self.state_serial)
        except StudyRefused as exc:
            for entry in study.entries.values():
                refuse_entry(entry, f"study update of {study_key(study.uid)}: {exc}")
        except PayloadTooLarge as exc:
            for entry in study.entries.values():
                refuse_entry(entry, str(exc))
        finally:
            self.listed.pop(key, None)
            self.studies.settle((e["spec"], e["image_set_id"]) for e in study.entries.values())
        if group is not None:
            self._made(study, group, early)
        for index in study.entries:
            self.entries.rest(index)

    def _made(self, study: _Study, group: dict[str, Any], early: bool) -> None:
        leader = group.pop("_leader")
        if early:
            self.early[(study.datastore_id, study.uid)] = len(self.made)
        self.leaders.append(leader)
        self.made.append(group)
        for member in {m["image_set_id"] for m in group["members"]}:
            kept = []
            for index, entry in self._of(member):
                if entry["datastore_id"] == study.datastore_id and not (
                        entry["requests"] and index != leader):
                    self.entries.drop(index)   # absorbed
                    continue
                if entry["datastore_id"] == study.datastore_id:
                    entry["after_study"] = group["study"]
                    self.entries.changed(index, entry)
                kept.append(index)
            if kept:
                self.by_image_set[member] = kept[0] if len(kept) == 1 else kept
            else:
                self.by_image_set.pop(member, None)

    def _withdraw(self, key: Key, index: int, late: Entry) -> None:
        """A study planned early, and an entry of it read since (see the module's text):
        the late entry (``index``), and the study update if one was made, become errors."""
        reason = (f"study update of {study_key(key[1])}: image set {late['image_set_id']} of "
                  f"this study was read after the study update was planned, and the search "
                  f"that listed the study did not show it (the search index may lag behind "
                  f"an import): plan again")
        refuse_entry(late, reason)
        self.entries.changed(index, late)
        made = self.early[key]
        if made is None:
            return
        self.early[key] = None
        group = self.made[made]
        self.withdrawn.add(made)
        # (An entry that follows a study update is one a study changed: it is held.)
        for i, entry in self.entries.changes():
            if entry.get("after_study") == group["study"] \
                    and entry["datastore_id"] == group["datastore_id"]:
                self.entries.drop(i)
        for member in group["members"]:
            if not member.get("peer"):
                self.entries.add(member_error(group, member, reason))


def _search_studies(hi: HealthImaging, keys: list[tuple[str, str]], parallelism: int
                    ) -> dict[tuple[str, str], tuple[ImageSetSummary, ...]]:
    """The primary image sets of the studies ``keys`` (data store, StudyInstanceUID), searched
    up to ``parallelism`` at a time. A study whose search fails is left out: its turn in
    :func:`_plan_study` searches again and reports the error there, in order."""
    def search(key: tuple[str, str]) -> tuple[ImageSetSummary, ...] | None:
        try:
            return tuple(primary_summaries(hi, *key).values())
        except errors.ServiceError:
            return None

    if parallelism <= 1 or len(keys) <= 1:
        return {}
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        found = zip(keys, bounded(pool, search, keys, window=4 * parallelism))
        return {key: primaries for key, primaries in found if primaries is not None}


def _plan_study(study: _Study, entries_of: Callable[[str], list[tuple[int, Entry]]],
                studies: StudyIndex, hi: HealthImaging, redactor: Redactor, listed: dict,
                state_serial) -> dict[str, Any] | None:
    """The study update of ``study`` (None: nothing to change), its leader's index as
    ``_leader``. ``entries_of(image set id)``: the plan's entries of an image set so far, with
    their indexes."""

    merged = _merge(study, studies)
    found = listed.get((study.datastore_id, study.uid))
    primaries = {s.image_set_id: s for s in found} if found is not None else None
    if primaries is None:
        try:
            primaries = primary_summaries(hi, study.datastore_id, study.uid)
        except errors.ServiceError as exc:
            raise errors.about(exc, f"study update of {study_key(study.uid)}: the search for "
                                    f"its primary image sets") from None
    at, leader = min(study.entries.items(), key=lambda item: item[1]["image_set_id"])
    targeted = {e["image_set_id"] for e in study.entries.values()}
    blocked = min(((n, e) for i in primaries for n, e in entries_of(i) if e["error"]),
                  key=lambda item: item[0], default=None)
    if blocked is not None:
        raise StudyRefused(f"it would also change image set {blocked[1]['image_set_id']}, which "
                           f"cannot be planned ({blocked[1]['error']})")
    facts: dict[str, StudyFacts] = {}
    for image_set_id in sorted(set(primaries) | targeted):
        noted = studies.get(image_set_id)
        facts[image_set_id] = noted if noted is not None and image_set_id in targeted \
            else _peer_facts(hi, study.datastore_id, primaries[image_set_id], studies.keep)
    try:
        per_member = {i: _member_changes(merged, f, i) for i, f in facts.items()}
    except ImageSetProblem as exc:
        raise StudyRefused(str(exc)) from None
    own = studies.own(leader["spec"], leader["image_set_id"])
    spec = studies.deferred(leader["spec"], leader["image_set_id"])[0]
    per_member[leader["image_set_id"]] = per_member[leader["image_set_id"]] + own
    made = study_request(per_member, leader["image_set_id"], spec.force,
                         facts[leader["image_set_id"]].schema_version)
    if made is None:
        return None
    request, carried = made
    shown: dict[int, dict[str, Any]] = {}      # a change in a member and in the request: one

    def show(change: Change) -> dict[str, Any]:
        if id(change) not in shown:
            shown[id(change)] = change_entry(change, redactor)
        return shown[id(change)]

    members = []
    for image_set_id, changes in sorted(per_member.items()):
        mine = [e for e in study.entries.values() if e["image_set_id"] == image_set_id] or [
            e for _, e in entries_of(image_set_id) if not e["error"]
            and e["datastore_id"] == study.datastore_id]
        for entry in mine or [None]:
            spec, digest = (entry["spec"], entry["spec_digest"]) if entry else \
                (leader["spec"], leader["spec_digest"])
            member = {"spec": spec, "spec_digest": digest, "image_set_id": image_set_id,
                      "version_id": facts[image_set_id].version_id,
                      "before_digest": before_digest(changes) if changes else None,
                      "state_serial": state_serial(spec, image_set_id) if state_serial else None,
                      "peer": entry is None,
                      "changes": [show(c) for c in changes]}
            members.append(member)
    # The leader's member first: its spec's own changes travel in the request.
    members.sort(key=lambda m: (m["image_set_id"], m["spec"]) !=
                 (leader["image_set_id"], leader["spec"]))
    return {
        "_leader": at,
        "study": study_key(study.uid),
        "datastore_id": study.datastore_id,
        "leader": leader["image_set_id"],
        "members": members,
        "changes": [show(c) for c in carried],
        "requests": [request.to_json()],
    }
