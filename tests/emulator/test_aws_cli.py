"""The real AWS CLI against the emulator (`aws medical-imaging ... --endpoint-url URL`).

The cases follow the AWS CLI's documented examples (update, remove, revert). Each call costs
about half a second, so the calls are grouped into few tests.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from emulator_support import CT_STUDY, OT_STUDY

AWS = Path(sys.executable).with_name("aws")
pytestmark = pytest.mark.skipif(not AWS.exists() and not shutil.which("aws"),
                                reason="the AWS CLI is not installed")


@cache
def _cli_major() -> int:
    out = subprocess.run([str(AWS), "--version"], capture_output=True, text=True)
    return 2 if "aws-cli/2" in out.stdout + out.stderr else 1


def aws(emulator, *args, check=True):
    env = dict(os.environ, AWS_DISABLE_HOST_PREFIX_INJECTION="true")
    command = [str(AWS), "medical-imaging", *args, "--endpoint-url", emulator.url,
               "--output", "json"]
    if _cli_major() == 2:
        # CLI v2 reads blob parameters as base64 unless told otherwise; v1 takes raw text and
        # does not know the option.
        command += ["--cli-binary-format", "raw-in-base64-out"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None, result


def test_cli_reads(api, tmp_path):
    emu, ds, image_set = api.emulator, api.ds, api.image_set(CT_STUDY)
    props, _ = aws(emu, "get-image-set", "--datastore-id", ds, "--image-set-id", image_set)
    assert (props["versionId"], props["imageSetState"]) == ("1", "ACTIVE")
    assert isinstance(props["createdAt"], (int, float, str))
    out = tmp_path / "metadata.json.gz"
    headers, _ = aws(emu, "get-image-set-metadata", "--datastore-id", ds, "--image-set-id",
                     image_set, "--version-id", "1", str(out))
    assert headers == {"contentType": "application/json", "contentEncoding": "gzip"}
    raw = out.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(raw)) == api.meta(image_set, "1")
    found, _ = aws(emu, "search-image-sets", "--datastore-id", ds, "--search-criteria",
                   json.dumps({"filters": [{"operator": "EQUAL", "values": [
                       {"DICOMStudyInstanceUID": CT_STUDY}]}]}))
    [summary] = found["imageSetsMetadataSummaries"]
    assert summary["imageSetId"] == image_set and summary["version"] == 1
    _, failed = aws(emu, "get-image-set", "--datastore-id", ds, "--image-set-id", "0" * 32,
                    check=False)
    assert failed.returncode == 254 or failed.returncode == 255
    assert "ResourceNotFoundException" in failed.stderr


def test_cli_update_remove_revert_and_versions(make_api):
    # The CLI examples (a PatientName update per image set) predate primary image sets: pinned.
    api = make_api(update_delay=0.05, behaviours={"primary_restricted_levels": "off"})
    emu, ds, image_set = api.emulator, api.ds, api.image_set(OT_STUDY)
    common = ["--datastore-id", ds, "--image-set-id", image_set]
    # Example 1: insert or update an attribute.
    update = {"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": "MX^MX"}}}
    out, _ = aws(emu, "update-image-set-metadata", *common, "--latest-version-id", "1",
                 "--update-image-set-metadata-updates",
                 json.dumps({"DICOMUpdates": {"updatableAttributes": json.dumps(update)}}))
    assert (out["latestVersionId"], out["imageSetState"], out["imageSetWorkflowStatus"]) == (
        "2", "LOCKED", "UPDATING")
    assert api.wait(image_set)["imageSetWorkflowStatus"] == "UPDATED"
    assert api.meta(image_set)["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    # Example 3: remove an instance (the example passes --force).
    suid, series = next(iter(api.meta(image_set)["Study"]["Series"].items()))
    sop = sorted(series["Instances"])[0]
    removal = {"SchemaVersion": 1.1, "Study": {"Series": {suid: {"Instances": {sop: {}}}}}}
    aws(emu, "update-image-set-metadata", *common, "--latest-version-id", "2", "--force",
        "--update-image-set-metadata-updates",
        json.dumps({"DICOMUpdates": {"removableAttributes": json.dumps(removal)}}))
    assert api.wait(image_set)["overrides"] == {"forced": True}
    assert sop not in api.meta(image_set)["Study"]["Series"][suid]["Instances"]
    # Example 4: revert to a previous version.
    out, _ = aws(emu, "update-image-set-metadata", *common, "--latest-version-id", "3",
                 "--update-image-set-metadata-updates", json.dumps({"revertToVersionId": "1"}))
    assert out["latestVersionId"] == "4"
    api.wait(image_set)
    assert api.meta(image_set) == api.meta(image_set, "1")
    versions, _ = aws(emu, "list-image-set-versions", *common)
    listed = [(v["versionId"], v["ImageSetWorkflowStatus"])
              for v in versions["imageSetPropertiesList"]]
    assert listed == [("4", "UPDATED"), ("3", "UPDATED"), ("2", "UPDATED"), ("1", "IMPORTED")]
    # A stale version: the CLI shows the ConflictException.
    _, stale = aws(emu, "update-image-set-metadata", *common, "--latest-version-id", "1",
                   "--update-image-set-metadata-updates", json.dumps({"revertToVersionId": "1"}),
                   check=False)
    assert stale.returncode != 0 and "ConflictException" in stale.stderr
