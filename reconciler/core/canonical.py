"""Canonical JSON and its sha256: the one form every digest in reconciler is taken over.

Compact separators, sorted keys, UTF-8 (non-ASCII kept), no NaN. Plan checksums, spec digests,
before-digests, the inner hash of the state's keyed hashes, what the redactor's short hashes
are taken over and the text a refused request is remembered by all use it, so equal values
give equal digests everywhere, and a change of form could only ever be made here (it would
change every stored digest).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Iterator


def canonical_text(value: Any) -> str:
    """Raises TypeError/ValueError (without the value) for input that is not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def canonical_bytes(value: Any) -> bytes:
    return canonical_text(value).encode("utf-8")


def compact_bytes(value: Any) -> bytes:
    """The canonical form but for the order of keys, which is kept (what a packed list of a
    plan's items holds, so that ``plan --json`` prints them as they were made)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def digest(value: Any, salt: bytes = b"") -> str:
    """sha256 hex of ``salt`` + the canonical bytes of ``value``."""
    return hashlib.sha256(salt + canonical_bytes(value)).hexdigest()


def large_digest(value: Any, salt: bytes = b"") -> str:
    """:func:`digest` of a large document (a plan of 100,000 image sets) without its canonical
    text whole in memory: the same sha256, fed piece by piece."""
    h = hashlib.sha256(salt)
    for piece in json_pieces(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False):
        h.update(piece.encode("utf-8"))
    return h.hexdigest()


def json_pieces(value: Any, *, indent: int | None = None, sort_keys: bool = False,
                separators: tuple[str, str] | None = None, ensure_ascii: bool = True,
                allow_nan: bool = True) -> Iterator[str]:
    """Exactly the text of ``json.dumps(value, ...)`` with these options, in pieces: each
    member of a top-level object, and each item of a top-level member that is a list, is
    encoded on its own (by json's C encoder; ``JSONEncoder.iterencode`` is pure Python and
    several times slower). What plan files, ``plan --json`` and plan checksums are made of.
    A top-level member may be a :class:`~.packed.PackedList`, written as the list it holds."""
    from .packed import PackedList     # it encodes with this module

    def dumps(v: Any, level: int) -> str:
        text = json.dumps(v, indent=indent, sort_keys=sort_keys, separators=separators,
                          ensure_ascii=ensure_ascii, allow_nan=allow_nan)
        return text if indent is None or level == 0 else text.replace(
            "\n", "\n" + " " * (indent * level))

    if not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
        yield dumps(value, 0)
        return
    item_sep, key_sep = separators or ((", ", ": ") if indent is None else (",", ": "))
    newline = "" if indent is None else "\n"

    def pad(level: int) -> str:
        return "" if indent is None else " " * (indent * level)

    canonical = (indent is None and sort_keys and separators == (",", ":")
                 and not ensure_ascii and not allow_nan)
    yield "{" + newline
    for i, key in enumerate(sorted(value) if sort_keys else value):
        member = value[key]
        head = (item_sep + newline if i else "") + pad(1) + json.dumps(
            key, ensure_ascii=ensure_ascii) + key_sep
        if isinstance(member, PackedList) and canonical and member:
            # Stored as canonical text already (a checksum of a loaded plan): as it is.
            yield head + "["
            for j, text in enumerate(member.canonical_texts()):
                yield ("," if j else "") + text.decode("utf-8")
            yield "]"
        elif isinstance(member, (list, PackedList)) and member:
            yield head + "[" + newline
            for j, item in enumerate(member):
                yield (item_sep + newline if j else "") + pad(2) + dumps(item, 2)
            yield newline + pad(1) + "]"
        elif isinstance(member, PackedList):
            yield head + "[]"
        else:
            yield head + dumps(member, 1)
    yield newline + "}"


def batched(pieces: Iterable[str], size: int = 1 << 16) -> Iterator[str]:
    """``pieces`` joined into strings of about ``size`` characters (the last may be shorter):
    what is written or compressed at a time."""
    pending: list[str] = []
    length = 0
    for piece in pieces:
        pending.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(pending)
            pending, length = [], 0
    if pending:
        yield "".join(pending)
