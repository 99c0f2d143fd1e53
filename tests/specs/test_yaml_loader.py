"""The checked YAML loader: positions, duplicate keys, several documents, and clean errors
(never a traceback) for syntax errors, encodings, binary files, alias bombs and deep nesting."""

from __future__ import annotations

import pytest

from reconciler.spec import yamlload
from reconciler.spec.yamlload import load_bytes, load_text, render_path

LOADERS = [yamlload._PyLoader] + ([yamlload._CLoader] if hasattr(yamlload, "_CLoader") else [])


@pytest.fixture(autouse=True, params=LOADERS, ids=lambda c: c.__name__)
def loader(request, monkeypatch):
    """Every test runs with libyaml's parser and with PyYAML's pure-Python one."""
    monkeypatch.setattr(yamlload, "_Loader", request.param)
    return request.param


def test_positions_of_keys_and_values_are_one_based():
    docs, problems = load_text("a: 1\nb:\n  c: [x, y]\n", "f.yaml")
    assert problems == []
    doc = docs[0]
    assert doc.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert (doc.key_position(("b", "c")).line, doc.key_position(("b", "c")).column) == (3, 3)
    assert (doc.position(("b", "c", 1)).line, doc.position(("b", "c", 1)).column) == (3, 10)
    assert (doc.start.line, doc.start.column) == (1, 1)
    # an unknown path falls back to its closest known ancestor
    assert doc.position(("b", "c", 7, "z")) == doc.position(("b", "c"))


def test_plain_scalars_resolved_as_numbers_keep_their_source_text():
    text = "d: 20240105\nf: 5.0\ng: 0017\nt: 10:15:00\nb: YES\nq: '7'\nn: null\nw: 2024-01-05\n"
    doc = load_text(text, "f.yaml")[0][0]
    assert doc.data["d"] == 20240105 and doc.source_text(("d",)) == "20240105"
    assert doc.source_text(("f",)) == "5.0"
    assert doc.source_text(("g",)) == "0017"          # YAML 1.1 octal: 15
    assert doc.source_text(("t",)) == "10:15:00"      # YAML 1.1 base 60
    assert doc.data["b"] is True and doc.source_text(("b",)) == "YES"
    assert doc.data["q"] == "7" and doc.source_text(("q",)) is None   # quoted: a string
    assert doc.data["n"] is None
    assert doc.data["w"] == "2024-01-05"              # dates stay text, never datetime


def test_mapping_keys_are_their_source_text():
    doc = load_text("1.20: a\n00091001: b\ntrue: c\n", "f.yaml")[0][0]
    assert list(doc.data) == ["1.20", "00091001", "true"]


def test_duplicate_key_is_reported_at_the_second_occurrence():
    text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n"
    docs, problems = load_text(text, "f.yaml")
    assert [str(p) for p in problems] == [
        "f.yaml:5:3: b.c: duplicate key (first defined at line 3)"]
    assert docs[0].data["b"]["c"] == 1   # the first one is kept, never silently the last


def test_duplicate_keys_written_differently_are_still_duplicates():
    problems = load_text('a: 1\n"a": 2\n', "f.yaml")[1]
    assert [str(p) for p in problems] == ["f.yaml:2:1: a: duplicate key (first defined at line 1)"]


def test_several_documents_and_empty_ones():
    text = "---\na: 1\n---\n# only a comment\n---\nb: 2\n---\n"
    docs, problems = load_text(text, "f.yaml")
    assert problems == []
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert [d.index for d in docs] == [0, 2]
    assert docs[1].start.line == 6


def test_syntax_error_gives_the_parser_position():
    problems = load_text("a: 1\nb: [1, 2\nc: 3\n", "f.yaml")[1]
    assert len(problems) == 1
    assert str(problems[0]).startswith("f.yaml:3:2: YAML syntax error: ")


def test_documents_before_a_syntax_error_are_kept():
    docs, problems = load_text("a: 1\n---\nb: : c\n", "f.yaml")
    assert [d.data for d in docs] == [{"a": 1}]
    assert problems[0].line == 3 and "syntax error" in problems[0].message


def test_tab_indentation_is_a_clean_syntax_error():
    problems = load_text("a:\n\tb: 1\n", "f.yaml")[1]
    assert problems[0].line == 2 and "syntax error" in problems[0].message


def test_invalid_utf8_is_reported_at_the_byte():
    problems = load_bytes(b"a: 1\nb: caf\xe9\n", "f.yaml")[1]
    assert [str(p) for p in problems] == [
        "f.yaml:2:7: file is not valid UTF-8 (spec files must be UTF-8 text)"]


def test_utf16_and_binary_files_are_refused():
    assert "UTF-16" in load_bytes("a: 1\n".encode("utf-16"), "f.yaml")[1][0].message
    problems = load_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "f.yaml")[1]
    assert [str(p) for p in problems] == [
        "f.yaml:3:1: file contains NUL bytes: binary data, not YAML"]


def test_utf8_bom_is_accepted():
    docs, problems = load_bytes(b"\xef\xbb\xbfa: 1\n", "f.yaml")
    assert problems == [] and docs[0].data == {"a": 1}


def test_control_characters_are_refused_with_their_position():
    problems = load_text("a: 1\nb: x\x07y\n", "f.yaml")[1]
    assert [str(p) for p in problems] == ["f.yaml:2:5: character U+0007 is not allowed in YAML"]


def test_alias_bomb_is_refused_quickly():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    docs, problems = load_text("\n".join(lines) + "\n", "bomb.yaml")
    assert docs == []
    assert [str(p) for p in problems] == [
        f"bomb.yaml:1:1: document expands to more than {yamlload.MAX_NODES} nodes "
        "(aliases repeated too often?)"]


def test_small_aliases_are_expanded_with_their_own_paths():
    doc = load_text("x: &v [1, 2]\ny: *v\n", "f.yaml")[0][0]
    assert doc.data == {"x": [1, 2], "y": [1, 2]}
    assert doc.source_text(("y", 1)) == "2"
    assert doc.key_position(("y",)).line == 2


def test_recursive_alias_is_refused():
    problems = load_text("a: &a [*a]\n", "f.yaml")[1]
    assert len(problems) == 1 and "nesting is deeper than" in problems[0].message


def test_deep_flow_nesting_is_refused_without_recursion_error():
    problems = load_text("[" * 50_000, "f.yaml")[1]
    # our composer stops at MAX_DEPTH; libyaml's scanner may stop first (at its own 1000)
    assert len(problems) == 1 and problems[0].line == 1
    assert problems[0].message.startswith("YAML syntax error: ")
    assert "nesting" in problems[0].message


def test_deep_block_nesting_is_refused():
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v\n"
    problems = load_text(text, "f.yaml")[1]
    assert len(problems) == 1 and "nesting is deeper than" in problems[0].message


def test_merge_keys_tags_and_complex_keys_are_refused():
    text = "base: &b {x: 1}\nc:\n  <<: *b\nd: !custom 1\ne: !!binary aGVsbG8=\n? [k]\n: v\n"
    problems = [str(p) for p in load_text(text, "f.yaml")[1]]
    assert problems == [
        "f.yaml:3:3: c: YAML merge keys (<<) are not supported; write the entries out",
        "f.yaml:4:4: d: unsupported YAML tag !custom",
        "f.yaml:5:4: e: unsupported YAML tag !!binary",
        "f.yaml:6:3: mapping keys must be plain strings",
    ]


def test_large_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlload, "MAX_FILE_BYTES", 10)
    path = tmp_path / "big.yaml"
    path.write_text("a: 12345678901\n")
    problems = yamlload.load_file(path, "big.yaml")[1]
    assert problems[0].message.startswith("file is larger than 10 bytes")


def test_render_path_quotes_uids_and_odd_keys():
    assert render_path(("attributes", "Series", "1.2.3", "Instances", "1.2.3.4",
                        "ImageComments")) == \
        'attributes.Series["1.2.3"].Instances["1.2.3.4"].ImageComments'
    assert render_path(("attributes", "Series", "12345678", "ImageType", 0)) == \
        'attributes.Series["12345678"].ImageType[0]'
    assert render_path(("metadata", "labels", "app.kubernetes.io/name")) == \
        'metadata.labels["app.kubernetes.io/name"]'
    assert render_path(("a", "x" * 200)).endswith('..."]')
    assert render_path(()) == ""
