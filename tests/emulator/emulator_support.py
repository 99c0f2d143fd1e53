"""Helpers for the emulator tests (imported by tests and by this folder's conftest).

``Api`` wraps a boto3 client for one emulator with the few calls every test needs (update,
wait, read metadata), always over HTTP like any other client.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from reconciler.emulator.server import ThreadedEmulator

EXAMPLES_DICOM = Path(__file__).resolve().parents[2] / "examples" / "dicom"
SAMPLE_METADATA = Path(__file__).resolve().parents[1] / "data" / "aws-sample-metadata.json"

# The studies in examples/dicom (see its README).
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
NM_STUDY = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"      # 2 instances, 1 series
OT_STUDY = "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114"  # 3 instances
RT_STUDY = "1.22.333.4.555555.6.7777777777777777777777777777"


def medical_imaging_client(url: str, **config: Any):
    return boto3.client("medical-imaging", endpoint_url=url, region_name="us-east-1",
                        config=Config(inject_host_prefix=False, **config))


class Api:
    """A boto3 client bound to one emulator, plus shortcuts."""

    def __init__(self, emulator: ThreadedEmulator, **config: Any):
        self.emulator = emulator
        self.client = medical_imaging_client(emulator.url, **config)
        self.ds = emulator.datastore_id
        self.exceptions = self.client.exceptions

    def image_set(self, study_uid: str) -> str:
        for image_set_id in self.emulator.image_set_ids:
            doc = self.emulator.backend.metadata(image_set_id, 1)
            if doc["Study"]["DICOM"]["StudyInstanceUID"] == study_uid:
                return image_set_id
        raise KeyError(study_uid)

    def get(self, image_set_id: str, version: str | None = None) -> dict[str, Any]:
        kw = {"versionId": version} if version else {}
        return self.client.get_image_set(datastoreId=self.ds, imageSetId=image_set_id, **kw)

    def meta(self, image_set_id: str, version: str | None = None) -> dict[str, Any]:
        kw = {"versionId": version} if version else {}
        blob = self.client.get_image_set_metadata(datastoreId=self.ds, imageSetId=image_set_id,
                                                  **kw)["imageSetMetadataBlob"].read()
        return json.loads(gzip.decompress(blob))

    def latest(self, image_set_id: str) -> str:
        return self.get(image_set_id)["versionId"]

    def update(self, image_set_id: str, updatable: dict | None = None,
               removable: dict | None = None, *, latest: str | None = None,
               force: bool | None = None, include_study: bool | None = None,
               revert: str | None = None) -> dict[str, Any]:
        if revert is not None:
            updates: dict[str, Any] = {"revertToVersionId": revert}
        else:
            dicom = {}
            if updatable is not None:
                dicom["updatableAttributes"] = json.dumps(
                    {"SchemaVersion": 1.1, **updatable}).encode()
            if removable is not None:
                dicom["removableAttributes"] = json.dumps(
                    {"SchemaVersion": 1.1, **removable}).encode()
            updates = {"DICOMUpdates": dicom}
        kw: dict[str, Any] = {}
        if force is not None:
            kw["force"] = force
        if include_study is not None:
            kw["includeStudyImageSets"] = include_study
        return self.client.update_image_set_metadata(
            datastoreId=self.ds, imageSetId=image_set_id,
            latestVersionId=latest or self.latest(image_set_id),
            updateImageSetMetadataUpdates=updates, **kw)

    def wait(self, image_set_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll GetImageSet until the image set leaves LOCKED (as clients must)."""
        deadline = time.monotonic() + timeout
        while True:
            props = self.get(image_set_id)
            if props["imageSetState"] != "LOCKED":
                return props
            if time.monotonic() > deadline:
                raise AssertionError("image set stayed LOCKED")
            time.sleep(0.01)

    def apply(self, image_set_id: str, *args: Any, **kw: Any) -> dict[str, Any]:
        """Update and wait: the final GetImageSet properties."""
        self.update(image_set_id, *args, **kw)
        return self.wait(image_set_id)


def series_and_instance(doc: dict[str, Any]) -> tuple[str, str]:
    suid, series = next(iter(doc["Study"]["Series"].items()))
    return suid, next(iter(series["Instances"]))
