"""Edits of the state that touch no image set: a spec renamed (``state mv``, ``moved`` in
reconciler.yaml), records forgotten (``state rm``, a removed spec), and the views of a state
with its pending renames done, to plan and check drift against.

The commands that edit run under the state lock (the caller holds it:
:func:`reconciler.engine.operations.locked_state`), keep a backup of the snapshot they change
(:func:`write_backup`), and write the state once, so its serial grows by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import StateError
from . import files
from .document import State


@dataclass
class Edit:
    """What one edit did (or, dry, would do)."""

    spec: str
    image_set_ids: list[str] = field(default_factory=list)
    target: str | None = None        # mv: the new name


def move(state: State, old: str, new: str, image_set_id: str | None = None) -> Edit:
    """``state mv``: the records of ``old`` (or one image set's) under ``new``. Refused when
    ``old`` has no such record, or ``new`` already has one of the same image set (Terraform's
    ``state mv`` refuses an existing destination too): nothing is changed then."""
    if old == new:
        raise StateError(f"spec {old} cannot be moved to its own name")
    present = [r.image_set_id for _, r in state.records(old)
               if image_set_id in (None, r.image_set_id)]
    if not present:
        raise StateError(_nothing(old, image_set_id))
    taken = [i for i in present if state.get(new, i) is not None]
    if taken:
        raise StateError(f"spec {new} already has a record of image set {taken[0]}: remove it "
                         f"first (reconciler state rm {new} --image-set-id {taken[0]}); nothing "
                         f"was changed")
    return Edit(old, state.rename(old, new, image_set_id), new)


def remove(state: State, name: str, image_set_id: str | None = None) -> Edit:
    """``state rm``: forget the records (and refusals) of ``name``, or of one of its image
    sets. The metadata is not touched."""
    ids = [r.image_set_id for _, r in state.records(name)
           if image_set_id in (None, r.image_set_id)]
    if not ids:
        raise StateError(_nothing(name, image_set_id))
    for isid in ids:
        state.remove(name, isid)
        state.forgive(name, isid)
    return Edit(name, ids)


def _nothing(name: str, image_set_id: str | None) -> str:
    return (f"no record of spec {name}" + (f" and image set {image_set_id}" if image_set_id
                                            else "") + " in the state; nothing was changed")


def moved_view(state: State, renames: Mapping[str, str]) -> tuple[State, list[tuple[str, str]]]:
    """A copy of ``state`` with the renames of reconciler.yaml's ``moved`` (old → new) done
    (``state`` itself when there is none to do),
    to plan and check drift against, and the renames it did. A rename whose old name holds
    nothing is already done; one whose new name holds records already is not done here (the
    plan says why: :func:`reconciler.engine.removals.plan_moves`)."""
    todo = [(old, new) for old, new in sorted(renames.items())
            if state.records(old) and not state.records(new)]
    if not todo:
        # Nothing to rename: the state itself is the view (nothing writes to a view). A
        # copy of 100,000 records' maps was ~20 MB held by every plan.
        return state, []
    view = state.copy()
    for old, new in todo:
        view.rename(old, new)
    return view, todo


def write_backup(state: State, path: Path) -> Path:
    """The snapshot ``state`` is now (before an edit), to ``path``, atomically, mode 0600. It
    holds what the state holds: ids, versions and salted hashes, never a metadata value."""
    path = Path(path)
    if path.parent != Path(""):
        files.ensure_dir(path.parent)
    try:
        state.streamed(lambda chunks: files.atomic_write(path, chunks))
    except OSError as exc:
        raise StateError(f"could not write the backup {path} ({exc.strerror or exc}); "
                         f"nothing was changed") from exc
    return path
