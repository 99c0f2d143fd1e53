"""``reconciler fmt``: one canonical layout for spec files, comments kept, for pre-commit and CI.

Review diffs of a metadata repository should show changed values, not changed indentation.
The files are read and written with ruamel.yaml's round-trip mode, which keeps comments, key
order, quoting and flow style (``labels: {team: radiology}``); what it normalises is layout:
two-space indentation for mappings, sequences indented under their key (``- `` at +2), one
space after ``:``, full-line comments indented like the line they precede, no trailing
whitespace, ``---`` between documents, one newline at the end.

fmt never reorders keys or requotes values, and it checks that it did not change meaning: the
project's own loader (:mod:`reconciler.spec.yamlload`) must read the same data *and* the same
source text of every unquoted number (``StudyDate: 20240105`` stays that text) before and
after; a file for which that does not hold is reported and left as it is. A file that does not
parse is reported with the parser's position (``validate`` says more).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .config import Config
from .yamlload import load_text

WIDTH = 4096   # never re-wrap long values (UIDs, descriptions): a wrapped scalar is a noisy diff


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = WIDTH
    yaml.allow_duplicate_keys = False
    # null is how a spec says "must be absent": write it out rather than leave a bare key.
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _meaning(text: str, name: str):
    documents, problems = load_text(text, name)
    return [(d.data, d.texts) for d in documents], problems


def format_text(text: str, name: str = "<text>") -> str:
    """``text`` in the canonical layout. Raises :class:`FormatError` when it cannot be
    formatted safely (syntax error, or a change of meaning)."""
    before, problems = _meaning(text, name)
    if problems:
        raise FormatError(str(problems[0]))
    yaml = _yaml()
    try:
        documents = list(yaml.load_all(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise FormatError(f"{where}: YAML error: {getattr(exc, 'problem', None) or exc}") from None
    if not documents:
        return text
    out = io.StringIO()
    yaml.explicit_start = text.lstrip().startswith("---")
    yaml.dump_all(documents, out)
    formatted = _indent_comments([line.rstrip() for line in out.getvalue().splitlines()])
    formatted = formatted.strip("\n") + "\n"
    after, problems = _meaning(formatted, name)
    if problems or after != before:
        raise FormatError(f"{name}: formatting would change what the file means; left as it "
                          f"is (please report this)")
    return formatted


def _indent_comments(lines: list[str]) -> str:
    """ruamel keeps a full-line comment at the column it had; re-indenting the keys around it
    would leave it astray, so it takes the indentation of the line it precedes. (Inside a
    block scalar a ``#`` line is content: the meaning check above catches any such change.)"""
    out = list(lines)
    indent = 0
    for i in range(len(out) - 1, -1, -1):
        stripped = out[i].lstrip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            out[i] = " " * indent + stripped
        else:
            indent = len(out[i]) - len(stripped)
            if stripped.startswith("---"):
                indent = 0
    return "\n".join(out)


class FormatError(Exception):
    pass


@dataclass
class FmtResult:
    changed: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def format_paths(paths: list[str], config: Config, *, check: bool) -> FmtResult:
    """Format the spec files that ``paths`` name (as ``validate`` finds them); with ``check``,
    only say which would change."""
    from .loader import discover

    result = FmtResult()
    for path in discover(paths, config):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(f"{path}: cannot read ({type(exc).__name__})")
            continue
        try:
            formatted = format_text(text, str(path))
        except FormatError as exc:
            result.problems.append(str(exc))
            continue
        if formatted == text:
            result.unchanged.append(path)
            continue
        result.changed.append(path)
        if not check:
            path.write_text(formatted, encoding="utf-8")
    return result

