"""Helpers of the GitOps tests: the example metadata repository of examples/gitops copied into
a temporary git repository, wired to a local HealthImaging emulator (for AWS HealthImaging)
and a moto server (for the S3 state bucket and the KMS key), exactly as the workflows configure
it.

The test config raises the client-side UpdateImageSetMetadata quota (0.25/s would make every
apply wait seconds) and gives each test its own state key; nothing else of the example changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config
from matrix import readings
from workflow_runner import Runner

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "gitops"
EXAMPLES_DICOM = REPO_ROOT / "examples" / "dicom"
BUCKET = "example-radiology-reconciler-state"
KMS_ALIAS = "alias/radiology-reconciler"
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SPEC = "specs/study-2966c9f9fbae.yaml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


class OutOfBand:
    """HealthImaging behind reconciler's back: plain boto3, as another tool or a person at the
    console would change an image set."""

    def __init__(self, emu):
        self.emu = emu
        self.client = boto3.client("medical-imaging", endpoint_url=emu.url,
                                   region_name="us-east-1",
                                   config=Config(inject_host_prefix=False))

    def image_set_of(self, study_uid: str) -> str:
        found = self.client.search_image_sets(
            datastoreId=self.emu.datastore_id,
            searchCriteria={"filters": [{"operator": "EQUAL",
                                         "values": [{"DICOMStudyInstanceUID": study_uid}]}]})
        (summary,) = found["imageSetsMetadataSummaries"]
        return summary["imageSetId"]

    def write_oob(self, image_set_id: str, study: dict) -> None:
        found = self.client.get_image_set(datastoreId=self.emu.datastore_id,
                                          imageSetId=image_set_id)
        # A Study change to a primary image set goes study-wide, as any writer's must where
        # the service restricts the Study level (primary_restricted_levels=patient_study).
        self.client.update_image_set_metadata(
            datastoreId=self.emu.datastore_id, imageSetId=image_set_id,
            latestVersionId=found["versionId"],
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(
                {"SchemaVersion": readings.schema_version(readings.current()),
                 "Study": {"DICOM": study}})}},
            includeStudyImageSets=bool(found.get("isPrimary")))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = self.client.get_image_set(datastoreId=self.emu.datastore_id,
                                            imageSetId=image_set_id)
            if got["imageSetState"] != "LOCKED":
                assert got["imageSetWorkflowStatus"] == "UPDATED", got
                return
            time.sleep(0.01)
        raise AssertionError("the out-of-band update did not finish")


class MetadataRepo(OutOfBand):
    """The example repository in a temporary git repository, and the helpers a scripted pull
    request needs: branches, edits, merges, and an out-of-band writer for drift."""

    def __init__(self, root: Path, emu, s3_url: str):
        super().__init__(emu)
        self.root = root
        shutil.copytree(EXAMPLE, root)
        config = (root / "reconciler.yaml").read_text()
        assert "datastoreId: " + emu.datastore_id in config, "the example names another data store"
        config = config.replace("key: radiology/state.json", f"key: {uuid.uuid4()}/state.json")
        config = config.replace("UpdateImageSetMetadata: 0.25", "UpdateImageSetMetadata: 100")
        (root / "reconciler.local.yaml").unlink()     # CI uses reconciler.yaml only
        (root / "reconciler.yaml").write_text(config)
        for spec in (root / "specs").glob("*.yaml"):   # (see readings.spec_for_reading)
            spec.write_text(readings.spec_for_reading(readings.current(), spec.read_text()))
        git(root, "init", "-q", "-b", "main")
        git(root, "config", "user.name", "Test Author")
        git(root, "config", "user.email", "test@example.invalid")
        git(root, "config", "commit.gpgsign", "false")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "metadata repository")
        self.env = {**_aws_env(), "AWS_ENDPOINT_URL_MEDICAL_IMAGING": emu.url,
                    "AWS_ENDPOINT_URL_S3": s3_url, "AWS_ENDPOINT_URL_KMS": s3_url}
        # The only expressions in the env of the workflows' reconciler steps: which package to
        # install (not used here: reconciler is this venv's), the step outputs they read, and
        # the pull request's labels (none unless a test says so: label()).
        self.runner = Runner(root, self.env, expressions={
            "vars.RECONCILER_PACKAGE || 'reconciler==0.1.0'": "reconciler (this checkout)",
            "join(github.event.pull_request.labels.*.name, ' ')": ""})

    def label(self, *names: str) -> None:
        """The pull request's labels, as the plan workflow reads them."""
        self.runner.expressions["join(github.event.pull_request.labels.*.name, ' ')"] = \
            " ".join(names)

    # -- git ----------------------------------------------------------------------------------
    def branch(self, name: str) -> None:
        git(self.root, "checkout", "-q", "-b", name, "main")

    def edit(self, path: str, old: str, new: str, message: str) -> None:
        file = self.root / path
        text = file.read_text()
        assert text.count(old) == 1, (path, old)
        file.write_text(text.replace(old, new))
        git(self.root, "commit", "-q", "-am", message)

    def merge(self, branch: str) -> None:
        git(self.root, "checkout", "-q", "main")
        git(self.root, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", branch)

    def cli(self, *args: str):
        """reconciler in process, in the checkout, with the same stand-ins (and CI set)."""
        from click.testing import CliRunner

        from reconciler.cli import cli

        env = {**self.env, "CI": "true"}
        with _chdir(self.root):
            return CliRunner().invoke(cli, ["--no-color", *args], env=env,
                                      catch_exceptions=False)


@contextlib.contextmanager
def _chdir(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _aws_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "XDG_CONFIG_HOME", "LANG", "LC_ALL", "TMPDIR", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE")
    return {k: os.environ[k] for k in keep if k in os.environ}
