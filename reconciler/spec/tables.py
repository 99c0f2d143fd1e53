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
apply, drift, the state and the reports.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.canonical import digest
from ..core.errors import Diagnostic
from . import schemacheck
from .types import Position, Spec
from .yamlload import Document, Path_

TABLE_KIND = "ImageSetMetadataTable"
TABLE_SCHEMA = "table.v1.schema.json"
NULL_MARKER = "<null>"
MAX_ROWS = 200_000
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+")

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
    header, rows, problem = _read_csv(raw, shown)
    if problem is not None:
        return [], [problem], []
    index = {name: i for i, name in enumerate(header)}
    missing = [(("match", key), column) for key, column in match.items() if column not in index]
    missing += [(("attributes", path), column) for path, column in attributes.items()
                if column not in index]
    if missing:
        return [], [doc.diagnostic(path, f"column {column!r} is not in the header of {shown}")
                    for path, column in missing], []
    out: list[tuple[Spec, Position]] = []
    warnings: list[Diagnostic] = []
    first_row: dict[str, int] = {}
    for line, cells in rows:
        row = _row_document(doc, data, shown, line, cells, index)
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
            out.append((spec, Position(shown, line, 1)))
    if not rows:
        warnings.append(doc.diagnostic(("source",), f"{shown} has a header and no rows"))
    return out, errors, warnings


def _read_csv(raw: bytes, shown: str) -> tuple[list[str], list[tuple[int, list[str]]],
                                                Diagnostic | None]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [], Diagnostic(shown, 1, 1, "", f"not UTF-8 (byte {exc.start})")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not any(cell.strip() for cell in header):
            return [], [], Diagnostic(shown, 1, 1, "", "a header row naming the columns is "
                                      "required")
        header = [cell.strip() for cell in header]
        seen = set()
        for i, cell in enumerate(header):
            if cell in seen:
                return [], [], Diagnostic(shown, 1, i + 1, "", f"column {cell!r} is named twice")
            seen.add(cell)
        rows = []
        start = reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((start, cells))
            if len(rows) > MAX_ROWS:
                return [], [], Diagnostic(shown, start, 1, "", f"more than {MAX_ROWS} rows: "
                                          "split the table")
            start = reader.line_num + 1
    except csv.Error as exc:
        return [], [], Diagnostic(shown, reader.line_num, 1, "", f"not valid CSV: {exc}")
    return header, rows, None


def _scalar(cell: str) -> tuple[Any, bool]:
    """A cell as a YAML plain scalar would be read: (value, whether it was not a string)."""
    if _INT.fullmatch(cell):
        return int(cell), True
    if _FLOAT.fullmatch(cell):
        return float(cell), True
    return cell, False


def _row_document(doc: Document, data: dict[str, Any], shown: str, line: int,
                  cells: list[str], index: dict[str, int]) -> RowDocument:
    """The spec document a row stands for, with every value positioned at its cell."""
    def cell(column: str) -> str:
        i = index[column]
        return cells[i].strip() if i < len(cells) else ""

    values: dict[Path_, tuple[int, int]] = {(): (line, 1)}
    texts: dict[Path_, str] = {}
    columns: dict[Path_, str] = {}
    target: dict[str, Any] = {}
    if data.get("target", {}).get("datastoreId"):
        target["datastoreId"] = data["target"]["datastoreId"]
    match_values = {}
    for key, column in data["match"].items():
        value = cell(column)
        path = ("target", "imageSetId") if key == "imageSetId" else ("target", "selector", key)
        values[path] = (line, index[column] + 1)
        columns[path] = column
        match_values[key] = value
        if key == "imageSetId":
            target["imageSetId"] = value
        else:
            target.setdefault("selector", {})[key] = value
    if data.get("target", {}).get("allowEmpty") and "selector" in target:
        target["allowEmpty"] = True
    attributes: dict[str, dict[str, Any]] = {}
    for path_text, column in data["attributes"].items():
        value = cell(column)
        if value == "":
            continue                            # not managed by this row
        level, key = path_text.split(".", 1)
        path = ("attributes", level, key)
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
        "metadata": {"name": f"{data['metadata']['name']}.{digest(match_values)[:12]}",
                     "labels": {**(data["metadata"].get("labels") or {}),
                                "table": data["metadata"]["name"]}},
        "target": target, "attributes": attributes,
    }
    for flag in ("force", "includeStudyImageSets"):
        if flag in data:
            spec[flag] = data[flag]
    return RowDocument(file=shown, index=doc.index, data=spec, values=values, texts=texts,
                       row=line, columns=columns)
