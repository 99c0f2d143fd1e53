"""Golden plans: spec + live metadata (the real AWS sample document, seeded into the emulator)
→ the expected human text and plan JSON, through the CLI and boto3 over HTTP.

Set UPDATE_GOLDEN=1 to rewrite the expected files after an intended change; review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.documents import plans
from reconciler.emulator.server import ThreadedEmulator

GOLDEN = Path(__file__).parents[1] / "golden" / "plan"
SAMPLE = Path(__file__).parents[1] / "data" / "aws-sample-metadata.json"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
HASH = re.compile(r"sha256:[0-9a-f]{6}>")


@pytest.fixture(scope="module")
def sample_emulator():
    # The sample is a 2023 document, from before primary image sets: seeded as non-primary,
    # the plan is one request per image set at every level (study updates of primary image
    # sets have tests of their own: tests/engine/test_grouping.py, tests/apply/).
    with ThreadedEmulator(seeds=[str(SAMPLE)], update_delay=0,
                          behaviours={"seed_primary": "false"}) as emu:
        yield emu


def _normalise_json(doc: dict) -> dict:
    for key in ("created_at", "checksum", "reconciler_version"):
        doc.pop(key)
    return json.loads(HASH.sub("sha256:HASH>", json.dumps(doc)))


def _invoke(url: str, args: list[str], tmp_path: Path):
    config = tmp_path / "reconciler.yaml"
    datastore = _datastore(url)
    config.write_text(f"datastoreId: {datastore}\n")
    result = CliRunner().invoke(
        cli, ["--no-color", "--config", str(config), *args],
        env={"AWS_ENDPOINT_URL_MEDICAL_IMAGING": url, "CI": None}, catch_exceptions=False)
    return result


def _datastore(url: str) -> str:
    import boto3
    from botocore.config import Config
    client = boto3.client("medical-imaging", endpoint_url=url,
                          config=Config(inject_host_prefix=False))
    return client.list_datastores()["datastoreSummaries"][0]["datastoreId"]


def _expected_json(folder: Path, reading) -> str:
    """The golden plan document as the reading's service makes it: where it serves and
    accepts SchemaVersion only as the number 1.1 (schema_version=number), the payloads pin
    that form, two bytes shorter than the string "1.1" of the defaults."""
    text = (folder / "expected.json").read_text()
    if reading.behaviour("schema_version") == "number":
        text = text.replace('\\"SchemaVersion\\":\\"1.1\\"', '\\"SchemaVersion\\":1.1')
        text = re.sub(r'"bytes": (\d+)', lambda m: f'"bytes": {int(m[1]) - 2}', text)
    return text


@pytest.mark.parametrize("case", CASES)
def test_golden_plan(case, sample_emulator, tmp_path, reading):
    folder = GOLDEN / case
    args = (folder / "args.txt").read_text().split() if (folder / "args.txt").exists() else []
    spec = str(folder / "spec.yaml")
    text = _invoke(sample_emulator.url, ["plan", spec, *args], tmp_path)
    assert text.exit_code == 0, text.output
    as_json = _invoke(sample_emulator.url, ["plan", spec, "--json", *args], tmp_path)
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    plans.validate(doc)  # the printed document is itself a valid plan
    got_text = HASH.sub("sha256:HASH>", text.stdout)
    got_json = json.dumps(_normalise_json(doc), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_GOLDEN") and reading.is_default:
        (folder / "expected.txt").write_text(got_text)
        (folder / "expected.json").write_text(got_json)
    assert got_text == (folder / "expected.txt").read_text()
    assert got_json == _expected_json(folder, reading)
