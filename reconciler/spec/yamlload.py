"""A checked YAML loader that remembers where every node came from.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys, forgets line numbers,
expands aliases without limit and turns ``20240105`` into an int. A spec validator needs the
opposite on every count, so this module lets PyYAML scan and parse (with libyaml when it is
there), composes the node graph in Python with a depth limit (libyaml's own composer recurses
in C), and builds plain data itself from the nodes, keeping for every node:

* the position of its value and, for mapping entries, of its key (1-based line and column);
* for a plain scalar that YAML resolved to an int, float or bool, its source text, so that a
  string-valued DICOM attribute written ``StudyDate: 20240105`` or ``SliceThickness: 5.0``
  keeps exactly what was written.

Nodes are addressed by *paths*: tuples of mapping keys (``str``) and list indices (``int``),
the same shape as ``jsonschema``'s ``error.absolute_path``. Every failure is a
:class:`~reconciler.core.errors.Diagnostic`; nothing here raises on bad input.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..core.errors import Diagnostic
from ..dicom.paths import is_simple_key
from .types import Position

MAX_FILE_BYTES = 8 * 1024 * 1024   # a spec of 5,000 instances is well under 1 MiB
MAX_DEPTH = 64                     # specs nest ~8 levels; sequences inside sequences add a few
MAX_NODES = 200_000                # after alias expansion: stops "billion laughs" documents

_T = "tag:yaml.org,2002:"

Path_ = tuple  # a node path: tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document of a file, as plain data plus positions."""

    file: str                      # the file name as shown in diagnostics
    index: int                     # 0-based position of the document in its file
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    texts: dict[Path_, str] = field(default_factory=dict)

    def position(self, path: Path_ = ()) -> Position:
        """Where the value at ``path`` starts (or its closest known ancestor)."""
        path = tuple(path)
        while path not in self.values and path:
            path = path[:-1]
        line, column = self.values.get(path, (1, 1))
        return Position(self.file, line, column)

    def key_position(self, path: Path_) -> Position:
        """Where the mapping key of ``path`` is written (for a list item, where the item is)."""
        path = tuple(path)
        if path in self.keys:
            line, column = self.keys[path]
            return Position(self.file, line, column)
        return self.position(path)

    @property
    def start(self) -> Position:
        """The document's first key: where whole-document problems are reported."""
        return self.position(())

    def source_text(self, path: Path_) -> str | None:
        """The text of a plain scalar that YAML resolved to an int, float or bool."""
        return self.texts.get(tuple(path))

    def diagnostic(self, path: Path_, message: str, *, at_key: bool = False) -> Diagnostic:
        where = self.key_position(path) if at_key else self.position(path)
        return Diagnostic(where.file, where.line, where.column, render_path(path), message)


# --------------------------------------------------------------------------------------------
# Paths as shown to people
# --------------------------------------------------------------------------------------------
def render_path(path: Path_) -> str:
    """``("attributes", "Series", "1.2", "Instances", "1.2.3", "ImageComments")`` →
    ``attributes.Series["1.2"].Instances["1.2.3"].ImageComments``.

    Series and instance UIDs are always quoted in brackets (they contain dots); list indices
    are ``[n]``; other keys are dotted when they are simple words, else quoted in brackets.
    """
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if len(part) <= 80 else part[:77] + "..."
        uid_slot = (i in (2, 4) and path[0] == "attributes" and path[1] == "Series"
                    and (i == 2 or path[3] == "Instances"))
        if uid_slot or not is_simple_key(text):
            out += "[" + json.dumps(text, ensure_ascii=False) + "]"
        else:
            out += ("." if out else "") + text
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
class _DepthLimit:
    """A composer that refuses nesting deeper than :data:`MAX_DEPTH` (PyYAML's composer
    recurses once per level: without a limit, ``[[[[…`` ends in RecursionError)."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nesting is deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PyLoader(_DepthLimit, yaml.SafeLoader):
    pass


try:  # libyaml scans and parses ~5x faster; the composing stays in Python, with the limit
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _Loader: type = _PyLoader
else:
    class _CLoader(_DepthLimit, yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor,
                   yaml.resolver.Resolver):
        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _Loader = _CLoader

_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


class _TooLarge(Exception):
    pass


def load_file(path: Path, display: str | None = None) -> tuple[list[Document], list[Diagnostic]]:
    """Read and parse one file. Returns the documents that could be read (those before a
    syntax error are kept) and the problems found."""
    name = display if display is not None else str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [], [Diagnostic(name, 1, 1, "", f"file is larger than {MAX_FILE_BYTES} bytes; "
                                                    "split it into several spec files")]
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Diagnostic(name, 1, 1, "", f"cannot read file: {exc.strerror or exc}")]
    return load_bytes(raw, name)


def load_bytes(raw: bytes, name: str) -> tuple[list[Document], list[Diagnostic]]:
    text, problem = _decode(raw, name)
    if problem is not None:
        return [], [problem]
    return load_text(text, name)


def _decode(raw: bytes, name: str) -> tuple[str, Diagnostic | None]:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE,
                       codecs.BOM_UTF32_BE)):
        return "", Diagnostic(name, 1, 1, "", "file is UTF-16/UTF-32; spec files must be UTF-8")
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        return "", Diagnostic(name, line, 1, "", "file contains NUL bytes: binary data, not YAML")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode("utf-8", "replace")) + 1
        return "", Diagnostic(name, line, column, "", "file is not valid UTF-8 "
                                                      "(spec files must be UTF-8 text)")


def load_text(text: str, name: str) -> tuple[list[Document], list[Diagnostic]]:
    """Parse every document of ``text``; empty documents (a stray ``---``) are skipped."""
    documents: list[Document] = []
    problems: list[Diagnostic] = []
    bad = _NON_PRINTABLE.search(text)
    if bad:   # checked here so that both parsers report it alike, by character
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        return [], [Diagnostic(name, line, column, "", f"character U+{ord(bad.group()):04X} is "
                                                       "not allowed in YAML")]
    loader = None
    index = 0
    try:
        loader = _Loader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, ScalarNode) and node.tag == _T + "null"):
                index += 1
                continue
            doc = Document(name, index, None)
            builder = _Builder(doc, loader, problems)
            try:
                doc.data = builder.build(node, ())
            except _TooLarge:
                problems.append(Diagnostic(
                    name, node.start_mark.line + 1, node.start_mark.column + 1, "",
                    f"document expands to more than {MAX_NODES} nodes (aliases repeated "
                    "too often?)"))
            else:
                documents.append(doc)
            index += 1
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(exc, name))
    except yaml.YAMLError as exc:  # no position known
        problems.append(Diagnostic(name, 1, 1, "", f"YAML error: {type(exc).__name__}"))
    finally:
        if loader is not None:
            loader.dispose()
    return documents, problems


def _syntax_problem(exc: yaml.MarkedYAMLError, name: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid document'}"
    if exc.problem and exc.context:
        message += f" ({exc.context}"
        if exc.context_mark is not None and exc.context_mark.line != (mark.line if mark else -1):
            message += f" at line {exc.context_mark.line + 1}"
        message += ")"
    return Diagnostic(name, line, column, "", message)


def _short(tag: str) -> str:
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag


class _Builder:
    """Turns one composed node graph into plain data, recording positions on the way."""

    def __init__(self, doc: Document, loader: _Loader, problems: list[Diagnostic]):
        self.doc, self.loader, self.problems = doc, loader, problems
        self.count = 0

    def _at(self, node: Node, path: Path_, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Diagnostic(self.doc.file, mark.line + 1, mark.column + 1,
                                        render_path(path), message))

    def build(self, node: Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        if len(path) > MAX_DEPTH:  # only reachable through recursive aliases (&a [*a])
            self._at(node, path[:4], f"nesting is deeper than {MAX_DEPTH} levels "
                                     "(recursive alias?)")
            return None
        self.doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _T + "seq":
                self._at(node, path, f"unsupported YAML tag {_short(node.tag)}")
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        if node.tag != _T + "map":
            self._at(node, path, f"unsupported YAML tag {_short(node.tag)}")
        return self._mapping(node, path)

    def _mapping(self, node: MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._at(key_node, path, "mapping keys must be plain strings")
                continue
            if key_node.tag == _T + "merge":
                self._at(key_node, path, "YAML merge keys (<<) are not supported; "
                                         "write the entries out")
                continue
            key = key_node.value
            child = path + (key,)
            if key in result:
                first = self.doc.keys[child]
                self._at(key_node, child, f"duplicate key (first defined at line {first[0]})")
                continue
            self.doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child)
        return result

    def _scalar(self, node: ScalarNode, path: Path_) -> Any:
        tag = node.tag
        if tag in (_T + "str", _T + "timestamp"):   # a YAML date stays the text written
            return node.value
        if tag == _T + "null":
            return None
        constructors = {_T + "bool": self.loader.construct_yaml_bool,
                        _T + "int": self.loader.construct_yaml_int,
                        _T + "float": self.loader.construct_yaml_float}
        if tag not in constructors:
            self._at(node, path, f"unsupported YAML tag {_short(tag)}")
            return node.value
        try:
            value = constructors[tag](node)
        except (ValueError, TypeError, yaml.YAMLError):
            self._at(node, path, f"value is not a valid {tag.rsplit(':', 1)[-1]}")
            return node.value
        if not node.style:   # plain: None from PyYAML, "" from libyaml
            self.doc.texts[path] = node.value
        return value
