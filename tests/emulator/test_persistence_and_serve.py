"""--data-dir persistence, and `reconciler emulator serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from emulator_support import CT_STUDY, EXAMPLES_DICOM, Api

from reconciler.emulator.server import ThreadedEmulator

REPO = Path(__file__).resolve().parents[2]


def test_restart_keeps_every_version_and_does_not_seed_twice(tmp_path):
    data = str(tmp_path / "data")
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], data_dir=data) as emu:
        api = Api(emu)
        image_set = api.image_set(CT_STUDY)
        api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "ONE"}}})
        api.apply(image_set, {"Study": {"DICOM": {"StudyID": "X"}}})           # fails: force
        api.client.tag_resource(resourceArn=api.get(image_set)["imageSetArn"], tags={"k": "v"})
        store = api.client.create_datastore(datastoreName="second")["datastoreId"]
        versions_before = api.client.list_image_set_versions(
            datastoreId=api.ds, imageSetId=image_set)["imageSetPropertiesList"]
        docs_before = [api.meta(image_set, str(n)) for n in (1, 2, 3)]
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], data_dir=data) as emu:
        api = Api(emu)
        assert sorted(emu.backend.image_sets) == sorted(emu.image_set_ids)   # no duplicates
        assert api.client.list_image_set_versions(
            datastoreId=api.ds, imageSetId=image_set)["imageSetPropertiesList"] == versions_before
        assert [api.meta(image_set, str(n)) for n in (1, 2, 3)] == docs_before
        assert api.client.list_tags_for_resource(
            resourceArn=api.get(image_set)["imageSetArn"])["tags"] == {"k": "v"}
        assert api.client.get_datastore(datastoreId=store)["datastoreProperties"][
            "datastoreName"] == "second"
        api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "TWO"}}}, latest="3")
        assert api.latest(image_set) == "4"


def test_in_flight_work_survives_a_restart(tmp_path):
    data = str(tmp_path / "data")
    emu = ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], data_dir=data, update_delay=0.2)
    with emu:
        api = Api(emu)
        image_set = api.image_set(CT_STUDY)
        api.update(image_set, {"Study": {"DICOM": {"StudyDescription": "LATE"}}})
    with ThreadedEmulator(data_dir=data) as again:
        api = Api(again)
        final = api.wait(image_set)
        assert final["imageSetWorkflowStatus"] == "UPDATED"
        assert api.meta(image_set)["Study"]["DICOM"]["StudyDescription"] == "LATE"


def test_files_are_written_atomically(tmp_path):
    data = tmp_path / "data"
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM / "CT_small.dcm")], data_dir=str(data)) as emu:
        image_set = emu.image_set_ids[0]
        Api(emu).apply(image_set, {"Study": {"DICOM": {"StudyDescription": "X"}}})
    folder = data / "imagesets" / image_set
    assert sorted(p.name for p in folder.iterdir()) == ["set.json", "v1.json", "v2.json"]
    assert not list(data.rglob(".*"))                  # no temporary files left behind
    record = json.loads((folder / "set.json").read_text())
    assert [v["status"] for v in record["versions"]] == ["IMPORTED", "UPDATED"]


# ------------------------------------------------------------------ the real command line
def _start(args, env=None):
    command = [sys.executable, "-m", "reconciler", "emulator", "serve", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _read_lines(proc, count, timeout=20.0):
    lines, deadline = [], time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    return lines


def _stop(proc, sig=signal.SIGINT):
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_ids_and_exits_cleanly(tmp_path, sig):
    data = str(tmp_path / "data")
    proc = _start(["--seed", str(EXAMPLES_DICOM), "--data-dir", data, "--update-delay", "0"])
    try:
        lines = _read_lines(proc, 7)
        assert lines[0].startswith("Emulator listening on http://127.0.0.1:")
        url = lines[0].rsplit(" ", 1)[1]
        expected = ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)])
        assert lines[1] == f"datastore {expected.datastore_id} reconciler-emulator"
        assert lines[2:] == [f"image-set {i} datastore={expected.datastore_id}"
                             for i in expected.image_set_ids]
        assert "CompressedSamples" not in "\n".join(lines)            # no metadata values
        from emulator_support import medical_imaging_client

        client = medical_imaging_client(url)
        image_set = expected.image_set_ids[0]
        client.update_image_set_metadata(
            datastoreId=expected.datastore_id, imageSetId=image_set, latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(
                {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "X"}}})}})
    finally:
        code = _stop(proc, sig)
    assert code == 0, proc.stderr.read()
    # Restart on the same data dir: the version is still there, nothing seeded twice.
    proc = _start(["--data-dir", data])
    try:
        lines = _read_lines(proc, 2)
        client = medical_imaging_client(lines[0].rsplit(" ", 1)[1])
        versions = client.list_image_set_versions(datastoreId=expected.datastore_id,
                                                  imageSetId=image_set)
        assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["2", "1"]
    finally:
        assert _stop(proc) == 0


def test_serve_refuses_bad_options(tmp_path):
    proc = _start(["--behaviour", "apply_order=sideways"])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "apply_order must be one of" in err
    assert out == ""


def test_serve_binds_loopback_by_default():
    proc = _start([])
    try:
        [line] = _read_lines(proc, 1)
        assert line.startswith("Emulator listening on http://127.0.0.1:")
    finally:
        assert _stop(proc) == 0
    assert os.environ.get("AWS_ACCESS_KEY_ID") == "testing"
