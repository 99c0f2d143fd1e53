"""Helpers of the key tests: a command run with an environment of its own (another key, none at
all), a format-1 state made the way format 1 made it, the attacker's dictionary attack, and
the forms key material could leak in."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
from pathlib import Path

from apply_support import Result
from cli_entry import cli_entry
from click.testing import CliRunner

from reconciler.core.canonical import canonical_bytes, digest

HEX64 = re.compile(rb"\b[0-9a-f]{64}\b")
NAMES = ["DOE^JANE", "DOE^JOHN", "SMITH^JOHN", "SMITH^MARY", "ANON^0001", "ANON0001",
         "SAMPLE^PATIENT01", "CompressedSamples^CT1", "Watson^John^H", "Lestrade^G",
         "Moriarty^James", "MUSTERMANN^MAX", "DUPONT^JEAN", "GARCIA^MARIA"]
SEXES = ["M", "F", "O"]


def run_with(project, *args: str, env: dict[str, str | None], ci: bool = False,
             input: str | None = None) -> Result:
    """``reconciler --config reconciler.yaml ARGS`` in process, with ``env`` on top of the
    project's (``XDG_CONFIG_HOME`` of a fresh machine, another ``RECONCILER_KEY`` …)."""
    result = CliRunner().invoke(cli_entry(), ["--no-color", "--config", str(project.config_path),
                                              *args],
                                env={**project.env(ci), **env}, input=input,
                                catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def downgrade(project) -> str:
    """The project's state as format 1 wrote it: ``sha256(salt + canonical JSON)`` of each
    applied value (read back from the version our apply made, and checked against the keyed
    hash), UIDs in clear, spec digests in clear, no keys. What a state written before keyed
    hashes looks like."""
    from reconciler.engine.diff import live_values
    from reconciler.engine.drift import recorded_paths, spec_uids
    from reconciler.spec.config import load_config
    from reconciler.spec.loader import load_specs
    from reconciler.states import State
    from reconciler.states.keys import key_source

    config = load_config(str(project.config_path))
    specs = load_specs([], config)
    state = State.from_json(project.state_path.read_bytes(), keys=key_source(config.keys))
    state.open_keys()
    salt = bytes.fromhex(state.salt)
    raw_digest = {state.spec_digest(s.digest): s.digest for s in specs}
    doc = json.loads(project.state_path.read_text())
    doc["format_version"] = "1"
    del doc["keys"]
    doc.pop("refusals", None)
    for name, record in state.records():
        metadata = project.metadata(record.image_set_id, record.version_after)
        paths = recorded_paths(state, record, metadata, spec_uids(specs))
        values = live_values(paths.values(), metadata)
        hashes = {}
        for stored, path in paths.items():
            assert "#" not in path and state.matches(record, stored, values[path]), path
            hashes[path] = digest(values[path], salt)
        body = doc["specs"][name]["image_sets"][record.image_set_id]
        body["hashes"], body["spec_digest"] = hashes, raw_digest[record.spec_digest]
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def dictionary() -> dict[str, list[str]]:
    """What an attacker tries: every date of 125 years, every sex, common and known names."""
    day, last = datetime.date(1900, 1, 1), datetime.date(2025, 12, 31)
    dates = []
    while day <= last:
        dates.append(day.strftime("%Y%m%d"))
        day += datetime.timedelta(days=1)
    return {"PatientBirthDate": dates, "PatientSex": SEXES, "PatientName": NAMES}


def attack(blobs: list[bytes], image_set_ids: list[str]) -> set[str]:
    """The values of the dictionary whose hash, under any simple construction an attacker
    would try with what the files hold (the salt, the image set ids), is in ``blobs``."""
    targets = {m.decode() for blob in blobs for m in HEX64.findall(blob)}
    salts = {bytes.fromhex(json.loads(blob)["salt"]) for blob in blobs}
    found = set()
    for name, values in dictionary().items():
        for value in values:
            if _constructions(value, name, salts, image_set_ids) & targets:
                found.add(value)
    return found


def _constructions(value: str, name: str, salts: set[bytes], image_set_ids: list[str]) -> set[str]:
    out = set()
    texts = {value.encode(), canonical_bytes(value)}
    for salt in salts:
        for key in (salt, salt.hex().encode(), b""):
            for text in texts:
                out.add(hashlib.sha256(key + text).hexdigest())
                out.add(hashlib.sha256(text + key).hexdigest())
                if key:
                    out.add(hmac.new(key, text, "sha256").hexdigest())
        inner = digest(value, salt)                       # format 1's hash
        out.add(hmac.new(salt, inner.encode(), "sha256").hexdigest())
        for image_set_id in image_set_ids:                # format 2's binding, the salt as key
            bound = f"{image_set_id}/{name}:{inner}".encode()
            out.add(hmac.new(salt, bound, "sha256").hexdigest())
            out.add(hashlib.sha256(bound).hexdigest())
    return out


def forms(secret: bytes) -> list[str]:
    """The ways a key could be printed or stored."""
    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="),
            base64.b64encode(secret).decode().rstrip("=")]


def files_of(state_path: Path) -> list[Path]:
    return sorted(p for p in state_path.parent.iterdir() if p.is_file())
