"""core.canonical.json_pieces is json.dumps in pieces; large_digest is digest."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.canonical import canonical_bytes, digest, json_pieces, large_digest

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=30)
documents = st.dictionaries(st.text(max_size=8), values | st.lists(values, max_size=6),
                            max_size=6)

OPTIONS = [{}, {"indent": 2, "ensure_ascii": False},
           {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
           {"indent": 2}, {"sort_keys": True, "indent": 4, "allow_nan": False}]


@settings(max_examples=300, deadline=None)
@given(documents | values)
def test_the_pieces_are_json_dumps(value):
    for options in OPTIONS:
        try:
            expected = json.dumps(value, **options)
        except ValueError:                      # inf with allow_nan=False: both refuse it
            continue
        assert "".join(json_pieces(value, **options)) == expected


@settings(max_examples=200, deadline=None)
@given(documents, st.binary(max_size=8))
def test_large_digest_is_digest(value, salt):
    try:
        expected = digest(value, salt)
    except ValueError:                          # inf: canonical JSON refuses it, so must this
        with pytest.raises(ValueError):
            large_digest(value, salt)
        return
    assert large_digest(value, salt) == expected


def test_a_plan_sized_list_is_many_pieces():
    doc = {"groups": [{"study": str(i), "members": [i]} for i in range(1000)], "n": 1}
    pieces = list(json_pieces(doc, indent=2))
    assert len(pieces) > 1000 and "".join(pieces) == json.dumps(doc, indent=2)


def test_nan_is_refused_as_json_dumps_refuses_it():
    with pytest.raises(ValueError):
        large_digest({"a": [math.nan]})


def test_batched_joins_pieces_to_about_the_size_and_loses_nothing():
    from reconciler.core.canonical import batched

    pieces = [str(i) * (i % 7 + 1) for i in range(500)]
    out = list(batched(pieces, size=100))
    assert "".join(out) == "".join(pieces)
    assert all(len(text) >= 100 for text in out[:-1]) and len(out) > 5
    assert list(batched([], size=100)) == []


def _sorted_items(value):
    """What a packed list gives back: its items as canonical JSON decodes them."""
    return json.loads(json.dumps(value, sort_keys=True))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.lists(values, max_size=6), max_size=6))
def test_a_packed_list_writes_as_the_list_it_holds(doc):
    from reconciler.core.packed import PackedList

    try:
        packed = {k: PackedList.of(v) for k, v in doc.items()}
    except ValueError:                          # inf: canonical JSON refuses it
        return
    plain = {k: _sorted_items(v) for k, v in doc.items()}
    for options in OPTIONS:
        assert "".join(json_pieces(packed, **options)) == json.dumps(plain, **options)
    assert large_digest(packed) == digest(plain)


def test_a_packed_item_is_a_fresh_copy_and_a_deep_copy_is_a_plain_list():
    import copy

    from reconciler.core.packed import PackedList

    packed = PackedList.of([{"a": [1]}, {"b": "é"}])
    packed[0]["a"].append(2)                    # changes a copy, not the list
    assert packed[0] == {"a": [1]} and list(packed) == [{"a": [1]}, {"b": "é"}]
    assert len(packed) == 2 and packed[1:] == [{"b": "é"}] and packed == [{"a": [1]}, {"b": "é"}]
    plain = copy.deepcopy({"items": packed})["items"]
    assert type(plain) is list and plain == list(packed)
    plain[0]["a"].append(2)                     # the copy is the caller's to change
    assert plain[0] == {"a": [1, 2]} and packed[0] == {"a": [1]}


def test_a_packed_list_keeps_blocks_of_alike_items_compressed_and_reads_every_item():
    from reconciler.core.packed import BLOCK, PackedList

    values = [{"spec": f"fixes.{i:012x}", "datastore_id": "d" * 32, "version_id": str(i),
               "changes": [{"key": "AccessionNumber", "op": "update", "after": f"A{i}"}]}
              for i in range(3 * BLOCK + 5)]
    packed = PackedList()
    for value in values:
        packed.append(value)
    assert len(packed) == len(values) and list(packed) == values
    assert [packed[i] for i in range(-len(values), len(values))] == values + values
    assert packed[BLOCK - 2:BLOCK + 3] == values[BLOCK - 2:BLOCK + 3]
    with pytest.raises(IndexError):
        packed[len(values)]
    texts = list(packed.texts())
    assert texts == [canonical_bytes(v) for v in values]
    again = PackedList(texts)
    assert again == packed and again == values and list(again.texts()) == texts
    held = sum(len(b) for b in packed._blocks) + sum(len(t) for t in packed._tail)
    assert held < sum(len(t) for t in texts) / 3          # alike items: a block packs small
    with pytest.raises(ValueError):
        PackedList([b'{"a":\n1}'])


def test_a_packed_list_made_as_it_is_keeps_the_order_of_keys_and_digests_as_canonical():
    # A plan's own items are packed with their keys in the order they were made (plan --json
    # prints them so), yet a checksum and a plan file take them in canonical form.
    from reconciler.core.packed import BLOCK, PackedList

    values = [{"spec": f"s{i}", "action": "update", "changes": [{"key": "K", "after": i}]}
              for i in range(BLOCK + 3)]
    ordered = PackedList.of(values, canonical=False)
    assert [list(v) for v in ordered] == [["spec", "action", "changes"]] * len(values)
    assert list(ordered) == values and ordered == PackedList.of(values) == values
    assert list(ordered.canonical_texts()) == [canonical_bytes(v) for v in values]
    assert list(ordered.texts()) != list(ordered.canonical_texts())
    assert digest({"items": values}) == large_digest({"items": ordered})
    assert json.loads("".join(json_pieces({"items": ordered}, indent=2))) == {"items": values}
    assert "".join(json_pieces({"items": ordered}, indent=2)) == json.dumps(
        {"items": values}, indent=2)
