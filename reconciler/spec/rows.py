"""A table row's spec, kept as the little that row alone holds.

A table (:mod:`.tables`) may have 200,000 rows, and every command holds every spec from
start to end. A row's :class:`~.types.Spec`, its target, attribute maps, attributes and
positions cost about 1.1 KB, and almost all of it is what every row of the table has alike:
the file, the data store, the selector's keys, each column's keyword, VR and column number.
A :class:`RowSpec` keeps only the row's own: its name, digest, line and values (about
0.45 KB), and makes its ``target`` and ``attributes`` from them, with the table's
:class:`RowShape`, each time they are asked for.

A row becomes a :class:`RowSpec` only once the full spec has been built and checked
(:func:`reconciler.spec.loader.build_spec`), and only when what it makes is equal to that
spec, field by field (:meth:`RowShape.compact`); any row it cannot reproduce stays a full
spec. So a row behaves exactly as its spec did. What differs: ``target`` and
``attributes`` are new objects at each reading (read them, never change them, as for any
spec), and :func:`dataclasses.replace` needs a real :class:`~.types.Spec`:
:func:`reconciler.spec.types.whole` gives one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data.service_facts import PATIENT
from .types import Attribute, DesiredAttributes, Position, Spec, Target

# A row whose cell for an attribute column is empty: that attribute is not managed by it
# (``None`` is a managed attribute that must be absent).
UNMANAGED = object()


class RowShape:
    """What every row of one table shares, learned from the rows' built specs. Attribute
    columns are learned from the first row that manages them."""

    def __init__(self, file: str, empty: Mapping[str, Any]):
        self.file = file
        self.empty = empty
        # (data store, allowEmpty, labels, force, includeStudyImageSets, matched on
        # imageSetId?, the selector's keys): learned from the first row
        self.fixed: tuple | None = None
        self.columns: list[tuple[str, str]] = []    # (level, key) of each attribute column
        self.kinds: dict[tuple[str, str], tuple[str, Position, bool]] = {}  # vr, where, private

    # -- making one --------------------------------------------------------------------
    def compact(self, spec: Spec, columns: list[tuple[str, str]]) -> RowSpec | None:
        """``spec`` (a row's, built and checked) as a :class:`RowSpec`, or None when this
        shape cannot make it again exactly (it is then kept as it is). ``columns``: the
        (level, key) of each attribute column, in the table's order."""
        if spec.attributes.series:
            return None
        target = spec.target
        fixed = (target.datastore_id, target.allow_empty, spec.labels, spec.force,
                 spec.include_study_image_sets, target.image_set_id is not None,
                 tuple(target.selector) if target.selector is not None else None)
        if self.fixed is None:
            self.fixed, self.columns = fixed, list(columns)
        elif fixed != self.fixed or self.fixed[2] is not spec.labels:
            return None
        values: list[Any] = []
        if target.image_set_id is not None:
            values.append(target.image_set_id)
        values += (target.selector or {}).values()
        line = spec.position.line
        for level, key in columns:
            declared = (spec.attributes.patient if level == PATIENT
                        else spec.attributes.study).get(key)
            if declared is None:
                values.append(UNMANAGED)
                continue
            where = declared.position
            kind = (declared.vr, Position(where.file, 0, where.column), declared.private)
            known = self.kinds.setdefault((level, key), kind)
            if known != kind or where.line != line:
                return None
            values.append(declared.value)
        row = RowSpec(spec.name, bytes.fromhex(spec.digest), spec.position, tuple(values),
                      self)
        if (row.digest, row.position, row.target, row.attributes) != (
                spec.digest, spec.position, spec.target, spec.attributes):
            return None
        return row

    # -- what a row makes --------------------------------------------------------------
    def target(self, values: tuple) -> Target:
        datastore, allow_empty, _, _, _, by_id, keys = self.fixed  # type: ignore[misc]
        start = 1 if by_id else 0
        selector = dict(zip(keys, values[start:start + len(keys)])) if keys is not None \
            else None
        return Target(datastore_id=datastore, image_set_id=values[0] if by_id else None,
                      selector=selector, allow_empty=allow_empty)

    def attributes(self, line: int, values: tuple) -> DesiredAttributes:
        _, _, _, _, _, by_id, keys = self.fixed  # type: ignore[misc]
        start = (1 if by_id else 0) + (len(keys) if keys is not None else 0)
        patient: dict[str, Attribute] = {}
        study: dict[str, Attribute] = {}
        for (level, key), value in zip(self.columns, values[start:]):
            if value is UNMANAGED:
                continue
            vr, where, private = self.kinds[(level, key)]
            (patient if level == PATIENT else study)[key] = Attribute(
                key, value, vr, Position(where.file, line, where.column), private)
        return DesiredAttributes(patient=patient or self.empty, study=study or self.empty,
                                 series=self.empty)


class RowSpec:
    """One table row's spec (see the module's text): reads as a :class:`~.types.Spec`."""

    __slots__ = ("name", "_digest", "_line", "_values", "_shape")

    def __init__(self, name: str, digest: bytes, position: Position, values: tuple,
                 shape: RowShape):
        self.name = name
        self._digest = digest
        self._line = position.line
        self._values = values
        self._shape = shape

    @property
    def digest(self) -> str:
        return self._digest.hex()

    @property
    def position(self) -> Position:
        return Position(self._shape.file, self._line, 1)

    @property
    def target(self) -> Target:
        return self._shape.target(self._values)

    @property
    def attributes(self) -> DesiredAttributes:
        return self._shape.attributes(self._line, self._values)

    @property
    def labels(self) -> Mapping[str, str]:
        return self._shape.fixed[2]  # type: ignore[index]

    @property
    def force(self) -> bool:
        return self._shape.fixed[3]  # type: ignore[index]

    @property
    def include_study_image_sets(self) -> bool:
        return self._shape.fixed[4]  # type: ignore[index]

    def whole(self) -> Spec:
        """This row as a :class:`~.types.Spec` (equal to the one it was made from)."""
        return Spec(name=self.name, target=self.target, attributes=self.attributes,
                    position=self.position, digest=self.digest, labels=self.labels,
                    force=self.force, include_study_image_sets=self.include_study_image_sets)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Spec, RowSpec)):
            return self.whole() == other.whole()
        return NotImplemented

    __hash__ = None     # as a Spec's: equal by value, not hashable

    def __repr__(self) -> str:
        return f"RowSpec({self.name!r}, {self._shape.file}:{self._line})"
