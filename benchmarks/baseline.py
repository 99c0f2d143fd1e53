"""The naive baseline: what a plain boto3 script does.

Read every image set (GetImageSet for the version, GetImageSetMetadata for the document),
deepdiff the *whole* document against the wanted one, send one UpdateImageSetMetadata per
changed attribute, no client-side pacing, botocore's default retries (no ``retries`` config).
After each update it polls GetImageSet until the image set leaves LOCKED (without that the next
update of the same image set is a guaranteed 409). Errors that escape botocore are counted, per
code, and the loop goes on: that is what "surfaced to the user" means for the baseline.

``python benchmarks/baseline.py plan ENDPOINT DATASTORE IDS_FILE`` runs the read-and-diff half
over the image sets listed (one per line), for the peak-RSS measurement; it keeps every diff
(as such a script would, to print them at the end).
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import sys
import time
from collections import Counter
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from deepdiff import DeepDiff

PATH_PART = re.compile(r"\[(?:'((?:[^'\\]|\\.)*)'|(\d+))\]")


def client(endpoint: str):
    return boto3.client("medical-imaging", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(inject_host_prefix=False))   # default retries


def wanted(doc: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """The whole document as the spec wants it (the baseline diffs whole documents)."""
    want = copy.deepcopy(doc)
    for key, value in (attrs.get("Patient") or {}).items():
        want["Patient"]["DICOM"][key] = value
    for key, value in (attrs.get("Study") or {}).items():
        want["Study"]["DICOM"][key] = value
    for series_uid, series in (attrs.get("Series") or {}).items():
        for key, value in series.items():
            if key != "Instances":
                want["Study"]["Series"][series_uid]["DICOM"][key] = value
    return want


def _path(deepdiff_path: str) -> list[str]:
    return [m.group(1) if m.group(1) is not None else m.group(2)
            for m in PATH_PART.finditer(deepdiff_path)]


def attribute_updates(doc: dict[str, Any], want: dict[str, Any]) -> list[dict[str, Any]]:
    """One updatableAttributes document per changed leaf of the deepdiff."""
    diff = DeepDiff(doc, want, view="tree")
    out = []
    for kind in ("values_changed", "type_changes", "dictionary_item_added"):
        for item in diff.get(kind, []):
            parts = _path(item.path())
            node: dict[str, Any] = {}
            top = node
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = item.t2
            top["SchemaVersion"] = 1.1
            out.append(top)
    return out


class Baseline:
    def __init__(self, endpoint: str, datastore_id: str):
        self.c = client(endpoint)
        self.ds = datastore_id
        self.errors: Counter[str] = Counter()
        self.updates = 0

    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            self.errors[exc.response.get("Error", {}).get("Code", "?")] += 1
            return None

    def read(self, isid: str) -> tuple[str | None, dict[str, Any] | None]:
        info = self._guard(self.c.get_image_set, datastoreId=self.ds, imageSetId=isid)
        meta = self._guard(self.c.get_image_set_metadata, datastoreId=self.ds, imageSetId=isid)
        if info is None or meta is None:
            return None, None
        return str(info["versionId"]), json.loads(gzip.decompress(meta["imageSetMetadataBlob"].read()))

    def wait(self, isid: str) -> str | None:
        while True:
            info = self._guard(self.c.get_image_set, datastoreId=self.ds, imageSetId=isid)
            if info is None:
                return None
            if info["imageSetState"] != "LOCKED":
                return str(info["versionId"])
            time.sleep(0.01)

    def apply(self, desired: dict[str, dict[str, Any]]) -> None:
        for isid, attrs in desired.items():
            version, doc = self.read(isid)
            if doc is None:
                continue
            for update in attribute_updates(doc, wanted(doc, attrs)):
                r = self._guard(self.c.update_image_set_metadata, datastoreId=self.ds,
                                imageSetId=isid, latestVersionId=version,
                                updateImageSetMetadataUpdates={"DICOMUpdates": {
                                    "updatableAttributes": json.dumps(update).encode()}})
                if r is not None:
                    self.updates += 1
                version = self.wait(isid) or version

    def drift(self, recorded: dict[str, dict[str, Any]]) -> int:
        """Re-read everything and deepdiff against the documents recorded after apply."""
        drifted = 0
        for isid, doc in recorded.items():
            _, live = self.read(isid)
            if live is not None and DeepDiff(doc, live):
                drifted += 1
        return drifted

    def plan(self, desired: dict[str, dict[str, Any]]) -> list[Any]:
        diffs = []
        for isid, attrs in desired.items():
            _, doc = self.read(isid)
            if doc is not None:
                diffs.append(attribute_updates(doc, wanted(doc, attrs)))
        return diffs


def _main(argv: list[str]) -> int:
    mode, endpoint, datastore, ids_file = argv
    assert mode == "plan"
    desired = json.loads(open(ids_file).read())
    b = Baseline(endpoint, datastore)
    diffs = b.plan(desired)
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _child import peak_rss_kb

    print(json.dumps({"planned": len(diffs), "maxrss_kb": peak_rss_kb(),
                      "errors": dict(b.errors)}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
