"""A list of JSON values kept as their canonical text, each decoded when it is read.

A saved plan of 100,000 image sets parsed into dicts and lists is ~3 KB an image set in
memory; the same items as canonical JSON bytes are about a third of that. ``apply`` reads a
plan's items one at a time (checks, the per-image-set walk, the requests), so it holds them
packed and decodes each where it is used; ``plan`` packs its study updates as it makes them.
The texts are compressed a block of items at a time (a plan's items are much alike): a study
update of a table row is ~960 bytes of JSON and ~150 packed.

Items are kept as canonical JSON (sorted keys: a loaded plan's lines, as they were saved and
checksummed), or, made with ``canonical=False``, with their keys in the order they had (the
plan's own items, so that ``plan --json`` prints them as made); :meth:`PackedList.canonical_texts`
gives the canonical form either way.

Reading gives a *new* value each time: an item cannot be changed in place. Code that copies a
document to change it (``copy.deepcopy``) gets a plain list back, whose items it may change.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .canonical import canonical_bytes, compact_bytes


BLOCK = 64        # items compressed together (a plan's study update: ~960 → ~150 bytes)


class PackedList(Sequence):
    """The items are kept in blocks of :data:`BLOCK`, each block's texts joined by newlines
    (JSON text holds none) and zlib-compressed: the items of a plan are alike (the same keys,
    the same data store, the same changes), so a block is about a sixth of its texts. The
    last, unfinished block is kept as it is."""

    __slots__ = ("_blocks", "_tail", "canonical")

    def __init__(self, texts: Iterable[bytes] = (), *, canonical: bool = True):
        """``texts``: the JSON of each item, one line each, as :meth:`encode` makes it:
        canonical (:func:`~.canonical.canonical_bytes`), or with ``canonical=False`` its
        keys in their order (:func:`~.canonical.compact_bytes`)."""
        self._blocks: list[bytes] = []
        self._tail: list[bytes] = []
        self.canonical = canonical
        for text in texts:
            self._add(text)

    @classmethod
    def of(cls, values: Iterable[Any], *, canonical: bool = True) -> PackedList:
        packed = cls(canonical=canonical)
        for value in values:
            packed.append(value)
        return packed

    def encode(self, value: Any) -> bytes:
        """The text this list keeps of ``value``."""
        return canonical_bytes(value) if self.canonical else compact_bytes(value)

    def append(self, value: Any) -> None:
        self._add(self.encode(value))

    def _add(self, text: bytes) -> None:
        if b"\n" in text:
            raise ValueError("a packed item's JSON text is one line")
        self._tail.append(text)
        if len(self._tail) == BLOCK:
            self._blocks.append(zlib.compress(b"\n".join(self._tail)))
            self._tail = []

    def texts(self) -> Iterator[bytes]:
        """Each item's canonical JSON, as stored."""
        for block in self._blocks:
            yield from zlib.decompress(block).split(b"\n")
        yield from list(self._tail)

    def canonical_texts(self) -> Iterator[bytes]:
        """Each item's canonical JSON (what checksums and plan files are made of)."""
        if self.canonical:
            yield from self.texts()
        else:
            for text in self.texts():
                yield canonical_bytes(json.loads(text))

    def __len__(self) -> int:
        return len(self._blocks) * BLOCK + len(self._tail)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [json.loads(t) for t in list(self.texts())[index]]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("packed list index out of range")
        block, at = divmod(index, BLOCK)
        if block == len(self._blocks):
            return json.loads(self._tail[at])
        return json.loads(zlib.decompress(self._blocks[block]).split(b"\n")[at])

    def __iter__(self) -> Iterator[Any]:
        for text in self.texts():
            yield json.loads(text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedList):
            return list(self.canonical_texts()) == list(other.canonical_texts())
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict) -> list[Any]:
        return list(self)

    def __repr__(self) -> str:
        return f"PackedList(<{len(self)} items>)"
