"""The journal of a local state: ``state.json.journal``, the writes made since the snapshot
``state.json``, so that a save costs the records it changes instead of the whole state.

One line per write, each ``<sha256 of the JSON, hex> <JSON>\\n`` (compact, sorted keys):

* the first line, the **header**: ``{"journal": "1", "lineage": L, "base_serial": S,
  "snapshot_sha256": D}`` — the snapshot it extends, and the digest of its bytes as written
  (validated) by the writer: a reader whose snapshot has that digest need not validate its
  records again, one whose snapshot does not (edited by hand) validates it all. A journal whose
  header does not name the snapshot beside it (a newer snapshot replaced it, by a compaction
  or by hand) is stale and is not replayed: a snapshot is always complete in itself.
* then one **entry** per write, serials ``S + 1``, ``S + 2`` … without a gap:
  ``{"serial": n, "head": {…}, "put": [[spec, image set id, record], …], "gone": [[spec,
  image set id], …]}`` — the document's head at serial ``n`` (everything but ``specs``) and
  the records that write put, replaced or removed (:meth:`~.document.State.changes`).

Reading is the snapshot with every entry replayed in order, then validated as a whole. An
append is one ``write`` of whole lines followed by ``fsync``: acknowledged once that returns.
A crash mid-append leaves at most a torn **last** line (no newline, or a checksum that does
not match): readers ignore it and the next writer cuts it off before appending. A damaged
line *followed by* whole ones is not a torn append but damage: refused, naming the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import StateError

JOURNAL_FORMAT = "1"
_HEX = 64


def line(obj: dict[str, Any]) -> bytes:
    """One journal line: checksum, space, compact JSON, newline."""
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(body).hexdigest().encode("ascii") + b" " + body + b"\n"


def header(lineage: str, base_serial: int, snapshot_sha256: str) -> bytes:
    """The first line of the journal of a snapshot whose bytes have ``snapshot_sha256``
    (:func:`snapshot_digest`; a streamed write hashes them as it goes)."""
    return line({"journal": JOURNAL_FORMAT, "lineage": lineage, "base_serial": base_serial,
                 "snapshot_sha256": snapshot_sha256})


def snapshot_digest(snapshot: bytes) -> str:
    return hashlib.sha256(snapshot).hexdigest()


@dataclass
class Journal:
    """A parsed journal: its header, its whole entries, and how many bytes they take (what
    follows is a torn last append, ``torn`` bytes of it)."""

    lineage: str
    base_serial: int
    snapshot_sha256: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    valid_bytes: int = 0
    torn: int = 0

    @property
    def serial(self) -> int:
        return self.entries[-1]["serial"] if self.entries else self.base_serial

    def extends(self, lineage: Any, serial: Any) -> bool:
        """Whether this journal is the one of a snapshot of ``lineage`` at ``serial``."""
        return self.lineage == lineage and self.base_serial == serial


def _decode(raw: bytes) -> dict[str, Any] | None:
    if len(raw) < _HEX + 2 or raw[_HEX:_HEX + 1] != b" ":
        return None
    body = raw[_HEX + 1:]
    if hashlib.sha256(body).hexdigest().encode("ascii") != raw[:_HEX]:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def parse(data: bytes, where: str) -> Journal | None:
    """The journal in ``data``; None when it has no whole header (empty, or its creation was
    torn: then there is nothing in it). ``where`` names the file in errors."""
    lines = data.split(b"\n")
    lines.pop()                            # after the last newline: b"" or a torn line
    objs: list[dict[str, Any] | None] = [_decode(raw) for raw in lines]
    # A bad line is a torn append only when it is the last whole one.
    torn_last = bool(objs) and objs[-1] is None
    for number, obj in enumerate(objs[:-1] if torn_last else objs, start=1):
        if obj is None:
            raise StateError(f"{where}: line {number} of the journal is damaged (its checksum "
                             f"does not match) and later writes follow it; the snapshot beside "
                             f"it holds the state before the journal")
    if torn_last:
        objs.pop()
    if not objs:
        return None
    head = objs[0]
    if head.get("journal") != JOURNAL_FORMAT or not isinstance(head.get("base_serial"), int):
        raise StateError(f"{where}: not a reconciler state journal (format {JOURNAL_FORMAT})")
    journal = Journal(lineage=str(head.get("lineage")), base_serial=head["base_serial"],
                      snapshot_sha256=head.get("snapshot_sha256"))
    expected = journal.base_serial + 1
    for number, entry in enumerate(objs[1:], start=2):
        if entry.get("serial") != expected or not isinstance(entry.get("head"), dict) \
                or not isinstance(entry.get("put"), list) or not isinstance(entry.get("gone"), list):
            raise StateError(f"{where}: line {number} of the journal is not the entry of serial "
                             f"{expected}")
        journal.entries.append(entry)
        expected += 1
    journal.valid_bytes = sum(len(raw) + 1 for raw in lines[:len(objs)])
    journal.torn = len(data) - journal.valid_bytes
    return journal


def replay(doc: dict[str, Any], journal: Journal, where: str) -> dict[str, Any]:
    """``doc`` (the snapshot, parsed) with every entry of ``journal`` applied, in place. The
    result is validated by the caller as a whole."""
    specs = doc.get("specs")
    if not isinstance(specs, dict):
        return doc                         # not a state: the validation says so
    for number, entry in enumerate(journal.entries, start=2):
        try:
            for name, isid in entry["gone"]:
                body = specs.get(name)
                if body is not None:
                    body["image_sets"].pop(isid, None)
                    if not body["image_sets"]:
                        del specs[name]
            for name, isid, record in entry["put"]:
                specs.setdefault(name, {"image_sets": {}})["image_sets"][isid] = record
        except (TypeError, ValueError, KeyError, AttributeError):
            raise StateError(f"{where}: line {number} of the journal is not a journal entry") from None
        for key in [k for k in doc if k != "specs"]:
            del doc[key]
        doc.update({k: v for k, v in entry["head"].items() if k != "specs"})
    return doc
