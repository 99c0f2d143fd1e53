"""plan, for what leaves the specs: renamed specs (``moved``) and the image sets no spec
covers any more (``removed``), as Terraform plans a resource gone from the configuration.

* :func:`prepare`: the renames of reconciler.yaml's ``moved`` done on a copy of the state (the
  plan is made against that view) and the plan's ``moved`` entries; a rename that contradicts
  the specs or the state is an error before anything is read.
* :func:`plan_removed`: every record of the state whose spec is gone (when the specs loaded are
  the whole project) or no longer covers its image set (a selector whose results shrank, an
  imageSetId that changed; a peer of a study update goes with its leader's record) becomes an
  entry of the plan's ``removed``: **forget** (drop the record, leave the metadata: the
  default) or **revert** (``removed`` in reconciler.yaml: revert to the version before our
  first apply, with its before and after values, then forget).

A revert is ``revertToVersionId``: the service restores the *whole* document of that version,
so the entry also lists, by path and without values, what else differs between the live
version and the target (someone else's later changes, which the revert undoes too). Reverting
an image set another spec still targets would undo that spec's attributes: an error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from itertools import chain
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core import errors
from ..core.canonical import canonical_text
from ..core.pools import bounded
from ..data.service_facts import INSTANCE, PATIENT, SERIES, STUDY
from ..dicom.dictionary import is_private_tag
from ..dicom.paths import attribute_path, containers, instance_path, parse, series_path
from ..dicom.redact import Redactor
from ..documents.types import MovedEntry, RemovedEntry
from ..healthimaging.api import DELETED, HealthImaging
from ..spec.lifecycle import FORGET, REVERT, Lifecycle
from ..spec.types import Spec
from ..states import ImageSetRecord, State
from ..states.edits import moved_view
from .diff import ADD, REMOVE, UPDATE, Change, dicom_equal, value_at
from .drift import metadata_uids, recorded_paths
from .entries import change_entry
from .reading import Assignment, Waiting, read_pinned, study_key

ERROR = "error"


def prepare(state: State, lifecycle: Lifecycle,
            specs: dict[str, Spec]) -> tuple[State, list[MovedEntry]]:
    """The state as the plan sees it, reconciler.yaml's renames done, and the ``moved``
    entries of the plan. Raises :class:`errors.ConfigError` when a rename cannot be done: the
    old name is still a spec, or the new name already has records."""
    renames = lifecycle.renames()
    problems = []
    for old, move in sorted(renames.items()):
        if not state.records(old):
            continue                     # nothing under the old name: done, or never applied
        if old in specs:
            where = specs[old].position
            problems.append(f"{move.where}: moved: spec {old} is moved to {move.target}, but a "
                            f"spec named {old} is still in the specs ({where.file}:{where.line}): "
                            f"rename it, or drop the moved entry")
        elif state.records(move.target):
            problems.append(f"{move.where}: moved: spec {old} is moved to {move.target}, but the "
                            f"state has records under {move.target} already: remove them first "
                            f"(reconciler state rm {move.target}), or drop the moved entry")
    if problems:
        raise errors.ConfigError("; ".join(problems))
    view, done = moved_view(state, {old: move.target for old, move in renames.items()})
    return view, [{"from": old, "to": new,
                   "image_sets": [{"datastore_id": r.datastore_id,
                                   "image_set_id": r.image_set_id, "state_serial": r.serial}
                                  for _, r in view.records(new)]}
                  for old, new in done]


def selected(name: str, targets: list[str], excludes: list[str]) -> bool:
    """Whether ``--target`` / ``--exclude`` choose a spec name (gone specs too)."""
    return ((not targets or any(fnmatch.fnmatchcase(name, g) for g in targets))
            and not any(fnmatch.fnmatchcase(name, g) for g in excludes))


def _covers(pairs: Iterable[tuple[str, str]]) -> Callable[[str, str], bool]:
    """Whether ``(spec name, image set id)`` is one of ``pairs``. Held as spec name → its image
    set id (a set of them when it has several), the strings the pairs already hold: a set of
    100,000 pairs made a tuple for each at the end of every plan."""
    by_spec: dict[str, str | set[str]] = {}
    for name, image_set_id in pairs:
        had = by_spec.setdefault(name, image_set_id)
        if isinstance(had, set):
            had.add(image_set_id)
        elif had != image_set_id:
            by_spec[name] = {had, image_set_id}

    def covers(name: str, image_set_id: str) -> bool:
        had = by_spec.get(name)
        return had == image_set_id if isinstance(had, str) else (
            had is not None and image_set_id in had)
    return covers


def plan_removed(hi: HealthImaging, state: State, assignments: list[Assignment],
                 specs: dict[str, Spec], lifecycle: Lifecycle, redactor: Redactor, *,
                 complete: bool, targets: list[str], excludes: list[str], waiting: Waiting,
                 parallelism: int = 10,
                 peers: set[tuple[str, str]] = frozenset()) -> list[RemovedEntry]:
    """The ``removed`` entries: records no spec covers any more. ``specs``: every spec loaded
    (by name); ``complete``: they are the whole project, so a name missing from them is a spec
    that was removed (with only some spec files named on the command line, nothing is taken
    for removed but the image sets a loaded spec no longer covers). ``peers``: (spec, image
    set) of the peers this plan's study updates record: covered by their update."""
    covered: Callable[[str, str], bool] | None = None     # made once a record needs it
    leaving: list[tuple[str, ImageSetRecord, str]] = []
    for name, record in state.records():
        if not selected(name, targets, excludes):
            continue
        spec = specs.get(name)
        if spec is not None:
            if covered is None:
                covered = _covers(chain(((a.spec.name, a.image_set_id) for a in assignments),
                                        peers))
            if covered(name, record.image_set_id) or (
                    record.peer_of is not None and covered(name, record.peer_of)):
                continue
            reason = (f"spec {name} no longer targets image set {record.image_set_id}"
                      + (" (its study update's leader left the spec)" if record.peer_of else ""))
        elif complete:
            reason = f"spec {name} is no longer in the specs"
        else:
            continue
        leaving.append((name, record, reason))

    if not leaving:
        return []
    del covered
    targeted = {(a.datastore_id, a.image_set_id): a.spec.name for a in assignments}
    reverts: dict[tuple[str, str], list[str]] = {}
    for name, record, _ in leaving:
        if _action(lifecycle, name) == REVERT:
            reverts.setdefault((record.datastore_id, record.image_set_id), []).append(name)

    def one(item: tuple[str, ImageSetRecord, str]) -> RemovedEntry:
        name, record, reason = item
        spec = specs.get(name)
        entry = _entry(name, spec.digest if spec is not None else None, record, reason,
                       _action(lifecycle, name))
        removal = lifecycle.removal(name)
        if removal is not None and removal.reason:
            entry["note"] = removal.reason
        if entry["action"] != REVERT:
            return entry
        key = (record.datastore_id, record.image_set_id)
        other = targeted.get(key)
        if other is not None:
            return _error(entry, f"image set {record.image_set_id} is to be reverted, but spec "
                                 f"{other} targets it: a revert restores the whole document and "
                                 f"would undo {other}'s attributes too. Make {name}'s removed "
                                 f"action forget, or take the image set out of {other} first")
        if len(reverts[key]) > 1:
            return _error(entry, f"image set {record.image_set_id} is to be reverted for "
                                 f"several removed specs ({', '.join(sorted(reverts[key]))}), "
                                 f"each to its own version: revert it for one, forget it for "
                                 f"the others")
        return plan_revert(hi, state, entry, record, redactor, waiting)

    workers = max(1, parallelism)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(bounded(pool, one, leaving, window=4 * workers))


def _action(lifecycle: Lifecycle, name: str) -> str:
    removal = lifecycle.removal(name)
    return removal.action if removal is not None else FORGET


def _entry(name: str, digest: str | None, record: ImageSetRecord, reason: str,
           action: str) -> RemovedEntry:
    return {"spec": name, "spec_digest": digest, "datastore_id": record.datastore_id,
            "image_set_id": record.image_set_id, "action": action, "reason": reason,
            "state_serial": record.serial, "version_id": None, "target_version": None,
            "study": None, "changes": [], "other_changes": [], "note": None, "error": None}


def _error(entry: RemovedEntry, message: str) -> RemovedEntry:
    entry["action"], entry["error"] = ERROR, message
    return entry


def plan_revert(hi: HealthImaging, state: State, entry: RemovedEntry, record: ImageSetRecord,
                redactor: Redactor, waiting: Waiting) -> RemovedEntry:
    """A revert entry: the live version (pinned, as every write of ours is) and the target's
    managed values, before and after; what else differs, by path. An image set already at
    the target version is only forgotten; one that is gone cannot be reverted (an error that
    says to forget it instead)."""
    ds, isid, target = record.datastore_id, record.image_set_id, record.origin
    way_out = (f"forget it instead: reconciler state rm {entry['spec']} --image-set-id {isid}, "
               f"or make the removed action of spec {entry['spec']} forget (reconciler.yaml)")
    try:
        image_set, live = read_pinned(hi, ds, isid, waiting)
        if image_set.state == DELETED:
            return _error(entry, f"image set {isid} is DELETED: there is nothing to revert; "
                                 f"{way_out}")
        if image_set.version_id == target:
            entry["action"] = FORGET
            entry["note"] = (f"already at version {target}, the version before our first "
                             f"apply: nothing to revert")
            return entry
        wanted = hi.get_metadata(ds, isid, target)
    except errors.NotFoundError:
        return _error(entry, f"image set {isid} (or its version {target}) was not found: it "
                             f"cannot be reverted; {way_out}")
    except errors.ServiceError as exc:
        raise errors.about(exc, f"image set {isid} (removed spec {entry['spec']})") from None
    # The record's paths carry keyed UID tokens: the two documents give the real UIDs.
    managed = set(recorded_paths(state, record, live,
                                 frozenset(metadata_uids(wanted))).values())
    changes, other = compare(managed, live, wanted)
    uid = ((live.get("Study") or {}).get("DICOM") or {}).get("StudyInstanceUID")
    entry.update({"version_id": image_set.version_id, "target_version": target,
                  "study": study_key(uid) if isinstance(uid, str) and uid else None,
                  "changes": [change_entry(c, redactor) for c in changes],
                  "other_changes": other})
    return entry


def compare(managed: Any, live: dict[str, Any],
            wanted: dict[str, Any]) -> tuple[list[Change], list[str]]:
    """What reverting ``live`` to ``wanted`` changes: the managed paths that differ, as
    changes (DICOM-aware, as a plan compares), and the paths of everything else that differs
    (a whole series or instance once, not each attribute in it)."""
    changes = []
    for path in sorted(managed):
        where = parse(path)
        had, before, vr_live = value_at(path, live)
        has, after, vr = value_at(path, wanted)
        vr = vr or vr_live
        level = where.level
        if where.key is None:
            if had == has:
                continue
            kind = "instance" if where.instance else "series"
            changes.append(Change(("restore-" if has else "remove-") + kind, level, "", None,
                                  series=where.series, instance=where.instance))
            continue
        if had == has and (not had or dicom_equal(before, after, vr)):
            continue
        op = ADD if not had else REMOVE if not has else UPDATE
        changes.append(Change(op, level, where.key, vr, before=before if had else None,
                              after=after if has else None, series=where.series,
                              instance=where.instance, private=is_private_tag(where.key)))
    rank = {PATIENT: 0, STUDY: 1, SERIES: 2, INSTANCE: 2}     # as a plan shows changes
    changes.sort(key=lambda c: (rank[c.level], c.series or "", c.instance or "", c.key))
    a, b = _leaves(live), _leaves(wanted)
    differ = {p for p in a.keys() | b.keys() if a.get(p) != b.get(p)}
    whole = {p for p in differ if parse(p).key is None and (p in a) != (p in b)}
    other = [p for p in differ
             if not any(c in whole for c in containers(p))
             and p not in managed and not any(c in managed for c in containers(p))]
    return changes, sorted(other)


def _dicom(node: Any) -> dict[str, Any]:
    found = node.get("DICOM") if isinstance(node, dict) else None
    return found if isinstance(found, dict) else {}


def _leaves(metadata: dict[str, Any]) -> dict[str, str]:
    """Every attribute of a metadata document by managed path → its canonical JSON, and every
    series and instance by its presence path."""
    out = {attribute_path(level, k): canonical_text(v)
           for level in (PATIENT, STUDY) for k, v in _dicom(metadata.get(level)).items()}
    study = metadata.get("Study") if isinstance(metadata.get("Study"), dict) else {}
    for suid, series in (study.get("Series") or {}).items():
        out[series_path(suid)] = SERIES
        out.update({series_path(suid, k): canonical_text(v) for k, v in _dicom(series).items()})
        for sop, instance in ((series or {}).get("Instances") or {}).items():
            out[instance_path(suid, sop)] = INSTANCE
            out.update({instance_path(suid, sop, k): canonical_text(v)
                        for k, v in _dicom(instance).items()})
    return out
