"""Table specs: one document declares a correction per row of a CSV file next to it.

Corrections come as lists (a RIS export of accession-number fixes, an EMPI merge list, a
cohort to de-identify). A ``kind: ImageSetMetadataTable`` document names the CSV file, which
columns select each row's image sets (``match``) and which attribute each other column sets
(``attributes``)::

    apiVersion: reconciler/v1
    kind: ImageSetMetadataTable
    metadata: {name: accession-fixes}
    source: accession-fixes.csv          # relative to this file; header row required
    match: {DICOMStudyInstanceUID: study_uid}
    attributes: {Study.AccessionNumber: accession}

Each row becomes one spec (``kind: ImageSetMetadata``) and is checked by the very code that
checks a YAML spec (:func:`reconciler.spec.loader.build_spec`), through a document whose
positions are the row's cells: every problem is reported as ``FILE.csv:ROW:COLUMN: path:
message``, all of them before anything is sent. From there on a row *is* a spec: in plan,
apply, drift, the state and the reports. It is held as the row's own values
(:class:`~.rows.RowSpec`), which make its spec's target and attributes when asked: a table of
200,000 rows is held by every command from start to end.

* A row's spec is named ``<table name>.<12 hex digits>``: a hash of its match values, stable
  across edits of the other columns and re-orderings of the file, never a patient value.
* An empty cell leaves that attribute unmanaged by the row; a cell holding exactly
  :data:`NULL_MARKER` (``<null>``) declares it absent (a removal).
* A cell that YAML would read as a number is a number for numeric VRs and its text for
  string VRs, exactly as a value written in a YAML spec.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from ..core.canonical import digest
from ..core.errors import Diagnostic
from . import schemacheck
from .rows import RowShape
from .types import Position, Spec
from .yamlload import Document, Path_

TABLE_KIND = "ImageSetMetadataTable"
TABLE_SCHEMA = "table.v1.schema.json"
NULL_MARKER = "<null>"
MAX_ROWS = 200_000
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+")

# What every row of a table has alike, shared by all its specs instead of copied per row
# (a table may have 200,000 rows): read-only, so that no row can change another.
EMPTY: Mapping[str, Any] = MappingProxyType({})

BuildSpec = Callable[[Document], "tuple[Spec | None, list[Diagnostic], list[Diagnostic]]"]


@dataclass
class RowDocument(Document):
    """One row as the spec document it stands for; its positions are the row's cells, and
    its diagnostics name the table's own words (``Study.AccessionNumber``, the column)."""

    row: int = 0
    columns: dict[Path_, str] | None = None    # spec path -> the column that holds it

    def diagnostic(self, path: Path_, message: str, *, at_key: bool = False) -> Diagnostic:
        where = self.position(path)
        shown = _shown_path(tuple(path), (self.columns or {}))
        return Diagnostic(where.file, where.line, where.column, shown, message)


def _shown_path(path: tuple, columns: dict[Path_, str]) -> str:
    for length in range(len(path), 0, -1):
        column = columns.get(path[:length])
        if column is not None:
            head = path[:length]
            if head[0] == "attributes":
                name = ".".join(str(p) for p in head[1:3])
            else:
                name = str(head[-1])
            return f"{name} (column {column})"
    return "row"


def build_table(doc: Document, build: BuildSpec) -> tuple[list[tuple[Spec, Position]],
                                                          list[Diagnostic], list[Diagnostic]]:
    """A table document → one ``(spec, where its name comes from)`` per row, the errors and
    the warnings. Errors in the document itself stop there; errors in rows are all
    collected."""
    errors, _ = schemacheck.check(doc, doc.data, TABLE_SCHEMA)
    data = doc.data if isinstance(doc.data, dict) else {}
    if errors:
        return [], errors, []
    match: dict[str, str] = data["match"]
    attributes: dict[str, str] = data["attributes"]
    source = Path(doc.file).parent / data["source"]
    shown = str(source)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        return [], [doc.diagnostic(("source",), f"cannot read {shown}: "
                                   f"{exc.strerror or type(exc).__name__}")], []
    header, problem = _read_csv(raw, shown)
    if problem is not None:
        return [], [problem], []
    index = {name: i for i, name in enumerate(header)}
    missing = [(("match", key), column) for key, column in match.items() if column not in index]
    missing += [(("attributes", path), column) for path, column in attributes.items()
                if column not in index]
    if missing:
        return [], [doc.diagnostic(path, f"column {column!r} is not in the header of {shown}")
                    for path, column in missing], []
    table = _Table.of(data, index)
    shape = RowShape(shown, EMPTY)
    columns = [(level, key) for level, key, _, _ in table.attributes]
    out: list[tuple[Spec, Position]] = []
    warnings: list[Diagnostic] = []
    first_row: dict[str, int] = {}
    for line, cells in _rows(raw):
        row = _row_document(doc, table, shown, line, cells)
        spec_name = row.data["metadata"]["name"]
        if spec_name in first_row:
            errors.append(Diagnostic(shown, line, 1, "row", f"the same match values as row "
                                     f"{first_row[spec_name]}: each row must select its own "
                                     f"image sets"))
            continue
        first_row[spec_name] = line
        spec, row_errors, row_warnings = build(row)
        errors += row_errors
        warnings += row_warnings
        if spec is not None:
            if not spec.attributes.managed_paths():
                warnings.append(Diagnostic(shown, line, 1, "row", "every attribute cell is "
                                           "empty: this row manages nothing"))
            _share(spec, table.labels)
            if not row_errors:          # kept as the row's own values (rows.py)
                spec = shape.compact(spec, columns) or spec
            out.append((spec, spec.position))   # where its name comes from: the row
    if not first_row:
        warnings.append(doc.diagnostic(("source",), f"{shown} has a header and no rows"))
    return out, errors, warnings


@dataclass(frozen=True)
class _Table:
    """What the document says once for all rows, worked out once."""

    datastore_id: Any
    allow_empty: bool
    match: list[tuple[str, str, Path_]]                 # (key, column, spec path)
    attributes: list[tuple[str, str, str, Path_]]       # (level, key, column, spec path)
    index: dict[str, int]                               # column -> position in a row
    name: str
    labels: Mapping[str, str]                           # every row's, read-only
    flags: dict[str, Any]                               # force, includeStudyImageSets

    @classmethod
    def of(cls, data: dict[str, Any], index: dict[str, int]) -> _Table:
        match = [(key, column, ("target", "imageSetId") if key == "imageSetId"
                  else ("target", "selector", key)) for key, column in data["match"].items()]
        attributes = []
        for path_text, column in data["attributes"].items():
            level, key = path_text.split(".", 1)
            attributes.append((level, key, column, ("attributes", level, key)))
        name = data["metadata"]["name"]
        labels = {**(data["metadata"].get("labels") or {}), "table": name}
        target = data.get("target", {})
        return cls(datastore_id=target.get("datastoreId"), allow_empty=bool(
            target.get("allowEmpty")), match=match, attributes=attributes, index=index,
            name=name, labels=MappingProxyType(labels),
            flags={f: data[f] for f in ("force", "includeStudyImageSets") if f in data})


def _share(spec: Spec, labels: Mapping[str, str]) -> None:
    """Swap the row spec's own copies of what every row holds alike (the table's labels, the
    empty attribute maps) for one read-only object each. Its digest is already taken, and
    equal either way."""
    if spec.labels == labels:
        spec.labels = labels
    desired = spec.attributes
    if not desired.patient:
        desired.patient = EMPTY
    if not desired.study:
        desired.study = EMPTY
    if not desired.series:
        desired.series = EMPTY


def _read_csv(raw: bytes, shown: str) -> tuple[list[str], Diagnostic | None]:
    """The header, once every row is known to parse (``_rows`` then reads them again one at
    a time, so that no list of all rows is ever held)."""
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], Diagnostic(shown, 1, 1, "", f"not UTF-8 (byte {exc.start})")
    reader = _reader(raw)
    try:
        header = next(reader, None)
        if not header or not any(cell.strip() for cell in header):
            return [], Diagnostic(shown, 1, 1, "", "a header row naming the columns is "
                                      "required")
        header = [cell.strip() for cell in header]
        seen = set()
        for i, cell in enumerate(header):
            if cell in seen:
                return [], Diagnostic(shown, 1, i + 1, "", f"column {cell!r} is named twice")
            seen.add(cell)
        for count, (start, _) in enumerate(_non_blank(reader), 1):
            if count > MAX_ROWS:
                return [], Diagnostic(shown, start, 1, "", f"more than {MAX_ROWS} rows: "
                                          "split the table")
    except csv.Error as exc:
        return [], Diagnostic(shown, reader.line_num, 1, "", f"not valid CSV: {exc}")
    return header, None


def _rows(raw: bytes) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, its cells) for each row that is not blank, header skipped;
    ``raw`` has passed :func:`_read_csv`."""
    reader = _reader(raw)
    next(reader)
    return _non_blank(reader)


def _reader(raw: bytes) -> Any:
    """A CSV reader decoding ``raw`` as it goes: the file is held once, as its bytes (the
    decoded text in a StringIO would take up to 4 bytes a character, and a copy)."""
    return csv.reader(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline=""))


def _non_blank(reader: Any) -> Iterator[tuple[int, list[str]]]:
    start = reader.line_num + 1
    for cells in reader:
        if any(cell.strip() for cell in cells):
            yield start, cells
        start = reader.line_num + 1


def _scalar(cell: str) -> tuple[Any, bool]:
    """A cell as a YAML plain scalar would be read: (value, whether it was not a string)."""
    if _INT.fullmatch(cell):
        return int(cell), True
    if _FLOAT.fullmatch(cell):
        return float(cell), True
    return cell, False


def _row_document(doc: Document, table: _Table, shown: str, line: int,
                  cells: list[str]) -> RowDocument:
    """The spec document a row stands for, with every value positioned at its cell."""
    index = table.index

    def cell(column: str) -> str:
        i = index[column]
        return cells[i].strip() if i < len(cells) else ""

    values: dict[Path_, tuple[int, int]] = {(): (line, 1)}
    texts: dict[Path_, str] = {}
    columns: dict[Path_, str] = {}
    target: dict[str, Any] = {}
    if table.datastore_id:
        target["datastoreId"] = table.datastore_id
    match_values = {}
    for key, column, path in table.match:
        value = cell(column)
        values[path] = (line, index[column] + 1)
        columns[path] = column
        match_values[key] = value
        if key == "imageSetId":
            target["imageSetId"] = value
        else:
            target.setdefault("selector", {})[key] = value
    if table.allow_empty and "selector" in target:
        target["allowEmpty"] = True
    attributes: dict[str, dict[str, Any]] = {}
    for level, key, column, path in table.attributes:
        value = cell(column)
        if value == "":
            continue                            # not managed by this row
        values[path] = (line, index[column] + 1)
        columns[path] = column
        if value == NULL_MARKER:
            attributes.setdefault(level, {})[key] = None
            continue
        parsed, typed = _scalar(value)
        if typed:
            texts[path] = value
        attributes.setdefault(level, {})[key] = parsed
    spec = {
        "apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
        "metadata": {"name": f"{table.name}.{digest(match_values)[:12]}",
                     "labels": dict(table.labels)},
        "target": target, "attributes": attributes, **table.flags,
    }
    return RowDocument(file=shown, index=doc.index, data=spec, values=values, texts=texts,
                       row=line, columns=columns)
