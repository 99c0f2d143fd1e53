"""Saved plans that were edited, truncated or are not plans at all: a clear PlanFileError, never
a traceback, and `apply` of such a file writes nothing (exit 1). A saved plan is sealed
(reconciler/documents/planfile.py): an edit of the sealed file does not authenticate, and an
edit made by someone holding the key, sealed again, still fails the document's checksum."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_files import write_plan

from reconciler.core.errors import KeyUnavailableError, PlanFileError
from reconciler.documents import plans
from reconciler.states.keys import EnvKeySource


def _key(secret: bytes) -> EnvKeySource:
    return EnvKeySource(environ={"RECONCILER_KEY": base64.b64encode(secret).decode()})


KEY, OTHER_KEY = _key(b"plan-files-test-key-0123456789ab"), _key(b"another-test-key-0123456789abcde")

GOLDEN = Path(__file__).parents[1] / "golden" / "plan" / "update-each-level" / "expected.json"


def _valid_plan() -> dict:
    doc = json.loads(GOLDEN.read_text())
    doc.update(created_at="2026-11-25T00:00:00+00:00", reconciler_version="0.1.0")
    for entry in doc["image_sets"]:
        entry["requests"] = [{"updatableAttributes": '{"SchemaVersion":1.1}',
                              "removableAttributes": None, "force": False,
                              "includeStudyImageSets": False}]
    doc["checksum"] = plans.checksum(doc)
    return plans.validate(doc)


def _load_bytes(tmp_path, data: bytes, keys=KEY):
    path = tmp_path / "plan.json"
    path.write_bytes(data)
    try:
        plans.load(path, keys)
    except PlanFileError as exc:
        assert str(exc).startswith(str(path))
        return exc
    return None


def _sealed(tmp_path, doc) -> bytes:
    write_plan(doc, tmp_path / "sealed.json", KEY)
    return (tmp_path / "sealed.json").read_bytes()


def test_a_sealed_plan_opens_with_its_key_and_with_no_other(tmp_path):
    doc = _valid_plan()
    data = _sealed(tmp_path, doc)
    assert _load_bytes(tmp_path, data) is None
    assert b"SchemaVersion" not in data and b"image_sets" not in data
    path = tmp_path / "plan.json"
    try:
        plans.load(path, OTHER_KEY)
    except KeyUnavailableError as exc:
        assert str(exc).startswith(f"the plan {path} was sealed with an environment variable's key")
        assert "holds another key" in str(exc)
    else:
        raise AssertionError("a plan opened with another key")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_bit_flipped_in_a_sealed_plan_is_refused(tmp_path, position, bit):
    data = bytearray(_sealed(tmp_path, _valid_plan()))
    data[position % len(data)] ^= 1 << bit
    try:
        error = _load_bytes(tmp_path, bytes(data))
    except KeyUnavailableError:      # the flip landed in the key id: "sealed with another key"
        return
    assert error is not None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_refused_cleanly(tmp_path, data):
    assert _load_bytes(tmp_path, data) is not None


def _mutations():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                     st.lists(st.integers(), max_size=3))
    return st.tuples(st.integers(0, 10_000), leaf)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutations())
def test_any_edit_of_a_valid_plan_is_detected(tmp_path, mutation):
    doc = _valid_plan()
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])
        if path and path[0] != "checksum":
            paths.append(path)
    walk(doc, [])
    index, value = mutation
    path = paths[index % len(paths)]
    target = doc
    for key in path[:-1]:
        target = target[key]
    if target[path[-1]] == value:
        return
    target[path[-1]] = value
    error = _load_bytes(tmp_path, _sealed(tmp_path, doc))
    assert error is not None, f"an edit at {path} went unnoticed"
    assert _load_bytes(tmp_path, json.dumps(doc).encode()) is not None    # in clear: refused


def test_apply_of_an_edited_plan_writes_nothing(emulator, tmp_path):
    env = dict(os.environ, AWS_ENDPOINT_URL_MEDICAL_IMAGING=emulator.url)
    (tmp_path / "reconciler.yaml").write_text(f"datastoreId: {emulator.datastore_id}\n")
    doc = _valid_plan()
    doc["image_sets"][0]["requests"][0]["updatableAttributes"] = (
        '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientName":"EDITED^BY^HAND"}}}')
    write_plan(doc, tmp_path / "plan.json")      # sealed with the key by whoever edited it
    result = subprocess.run([sys.executable, "-m", "reconciler", "apply", "plan.json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".reconciler" / "state.json").exists()


def _sealed_as(doc_bytes: bytes, version: str, lineage) -> bytes:
    """A plan file sealed by hand with KEY, as a given format version would write it."""
    from reconciler.documents.planfile import FORMAT, context
    from reconciler.states.keys import seal

    header = {"format": FORMAT, "format_version": version, "lineage": lineage,
              "created_at": "2026-11-25T00:00:00+00:00"}
    return json.dumps(seal(KEY, doc_bytes, context(lineage), header)).encode()


def test_a_plan_sealed_by_the_previous_format_still_opens(tmp_path):
    """Format 1 sealed the JSON as it is; a plan saved before the upgrade still applies."""
    doc = _valid_plan()
    data = _sealed_as(json.dumps(doc).encode(), "1", doc["state"]["lineage"])
    assert _load_bytes(tmp_path, data) is None


def test_a_plan_sealed_by_format_2_still_opens(tmp_path):
    """Format 2 sealed one gzip'd JSON text; format 3 (JSON lines) reads it too."""
    import gzip

    doc = _valid_plan()
    data = _sealed_as(gzip.compress(json.dumps(doc).encode()), "2", doc["state"]["lineage"])
    assert _load_bytes(tmp_path, data) is None


def _lines_sealed(tmp_path, edit) -> PlanFileError | None:
    """A valid format-3 plan whose decompressed lines went through ``edit``, sealed again."""
    import gzip

    from reconciler.documents.planfile import _compressed_lines

    doc = _valid_plan()
    lines = gzip.decompress(_compressed_lines(doc)).split(b"\n")
    data = _sealed_as(gzip.compress(b"\n".join(edit(lines))), "3", doc["state"]["lineage"])
    return _load_bytes(tmp_path, data)


def test_a_format_3_plan_opens_item_by_item_and_a_wrong_count_is_refused(tmp_path):
    assert _lines_sealed(tmp_path, lambda lines: lines) is None
    for edit in (lambda lines: lines[:-2] + lines[-1:],          # an item missing
                 lambda lines: lines[:-1] + [lines[1], b""],      # one too many
                 lambda lines: [lines[0][:-1]] + lines[1:],       # the first line cut
                 lambda lines: lines[:1] + [b"{"] + lines[2:]):   # an item that is not JSON
        exc = _lines_sealed(tmp_path, edit)
        assert exc is not None and "does not hold a plan document" in str(exc)


def test_the_sealed_document_is_compressed(tmp_path):
    doc = _valid_plan()
    doc["image_sets"] = doc["image_sets"] * 200
    doc["checksum"] = plans.checksum(doc)
    envelope = json.loads(_sealed(tmp_path, doc))
    assert envelope["format_version"] == "3" and envelope["compression"] == "gzip"
    assert len(base64.b64decode(envelope["ciphertext"])) < len(json.dumps(doc)) / 4
    assert _load_bytes(tmp_path, json.dumps(envelope).encode()) is None


def test_a_format_2_plan_that_is_not_gzip_is_refused(tmp_path):
    doc = _valid_plan()
    data = _sealed_as(json.dumps(doc).encode(), "2", doc["state"]["lineage"])
    exc = _load_bytes(tmp_path, data)
    assert exc is not None and "does not hold a plan document" in str(exc)


def test_another_spelling_of_the_ciphertext_is_refused(tmp_path):
    """Base64's padded last character has unused low bits: flipping one gives the same bytes.
    Found by the bit-flip test above once sealed plans were compressed (and their ciphertext no
    longer a multiple of 3 bytes long)."""
    envelope = json.loads(_sealed(tmp_path, _valid_plan()))
    text = envelope["ciphertext"]
    raw = base64.b64decode(text)
    if len(raw) % 3 == 0:
        raw += b"x"                                 # (make room for unused bits)
    text = base64.b64encode(raw).decode()
    stripped = text.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    spelled = stripped[:-1] + alphabet[alphabet.index(stripped[-1]) ^ 1] + text[len(stripped):]
    assert spelled != text and base64.b64decode(spelled) == raw
    from reconciler.states.keys import unb64

    assert unb64(text) == raw and unb64(spelled) is None
    envelope["ciphertext"] = spelled
    assert _load_bytes(tmp_path, json.dumps(envelope).encode()) is not None
