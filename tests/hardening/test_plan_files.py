"""Saved plans that were edited, truncated or are not plans at all: a clear PlanFileError, never
a traceback, and `apply` of such a file writes nothing (exit 1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.errors import PlanFileError
from reconciler.documents import plans

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


def _load_bytes(tmp_path, data: bytes):
    path = tmp_path / "plan.json"
    path.write_bytes(data)
    try:
        plans.load(path)
    except PlanFileError as exc:
        assert str(exc).startswith(str(path))
        return exc
    return None


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
    error = _load_bytes(tmp_path, json.dumps(doc).encode())
    assert error is not None, f"an edit at {path} went unnoticed"


def test_apply_of_an_edited_plan_writes_nothing(emulator, tmp_path):
    env = dict(os.environ, AWS_ENDPOINT_URL_MEDICAL_IMAGING=emulator.url)
    (tmp_path / "reconciler.yaml").write_text(f"datastoreId: {emulator.datastore_id}\n")
    doc = _valid_plan()
    doc["image_sets"][0]["requests"][0]["updatableAttributes"] = (
        '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientName":"EDITED^BY^HAND"}}}')
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    result = subprocess.run([sys.executable, "-m", "reconciler", "apply", "plan.json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".reconciler" / "state.json").exists()
