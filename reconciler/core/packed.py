"""A list of JSON values kept as their canonical text, each decoded when it is read.

A saved plan of 100,000 image sets parsed into dicts and lists is ~3 KB an image set in
memory; the same items as canonical JSON bytes are about a third of that. ``apply`` reads a
plan's items one at a time (checks, the per-image-set walk, the requests), so it holds them
packed and decodes each where it is used.

Reading gives a *new* value each time: an item cannot be changed in place. Code that copies a
document to change it (``copy.deepcopy``) gets a plain list back, whose items it may change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .canonical import canonical_bytes


class PackedList(Sequence):
    __slots__ = ("_texts",)

    def __init__(self, texts: Iterable[bytes] = ()):
        """``texts``: canonical JSON (:func:`~.canonical.canonical_bytes`) of each item."""
        self._texts = list(texts)

    @classmethod
    def of(cls, values: Iterable[Any]) -> PackedList:
        return cls(canonical_bytes(v) for v in values)

    def append(self, value: Any) -> None:
        self._texts.append(canonical_bytes(value))

    def texts(self) -> Iterator[bytes]:
        """Each item's canonical JSON, as stored."""
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [json.loads(t) for t in self._texts[index]]
        return json.loads(self._texts[index])

    def __iter__(self) -> Iterator[Any]:
        for text in self._texts:
            yield json.loads(text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedList):
            return self._texts == other._texts
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict) -> list[Any]:
        return list(self)

    def __repr__(self) -> str:
        return f"PackedList(<{len(self)} items>)"
