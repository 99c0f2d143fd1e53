"""The project config, ``reconciler.yaml``: where specs and state live, and project defaults.

The file is optional: without it every command works from the working directory with the
defaults below. When present it is validated like a spec (the same loader and the JSON Schema
``schemas/config.v1.schema.json``), and its problems are reported in the same
``FILE:LINE:COLUMN: PATH: message`` form before anything else happens. Relative paths in it are
relative to the directory of the file, so a command gives the same result from any directory.
"""

from __future__ import annotations

import os.path
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, Diagnostic, SpecError
from ..dicom import dictionary, paths
from ..states.backend import DEFAULT_LOCAL_PATH, DEFAULT_S3_KEY
from . import lifecycle
from .lifecycle import Lifecycle
from .schemacheck import check, is_flagged
from .yamlload import load_file

DEFAULT_NAME = "reconciler.yaml"

REDACT_MODES = ("auto", "always", "never")

# An attribute path glob: a managed path (reconciler.dicom.paths) with wildcards in its keys
# and UIDs, and * for the level of a Patient/Study attribute.
_ATTRIBUTE_GLOB = re.compile(paths.pattern(uid=r"[0-9.*?]+", key=r"[A-Za-z0-9*?]+",
                                           level=r"Patient|Study|\*"))


class ConfigFileError(SpecError, ConfigError):
    """``reconciler.yaml`` is invalid. Carries diagnostics like :class:`SpecError`, so the
    command line prints them the same way; it is also a :class:`ConfigError`."""

    def __init__(self, diagnostics: list[Diagnostic], file: str):
        super().__init__(diagnostics)
        count = len(self.diagnostics)
        self.message = f"{count} problem{'s' if count != 1 else ''} found in {file}"


@dataclass(frozen=True)
class StateConfig:
    backend: str = "local"          # "local" | "s3"
    path: Path | None = None        # local: absolute path of the state file
    bucket: str | None = None       # s3
    key: str | None = None          # s3
    region: str | None = None       # s3: the bucket's region (None: the default chain)
    endpoint_url: str | None = None  # s3: a custom endpoint (MinIO, moto, VPC endpoint)
    profile: str | None = None      # s3: AWS profile for the bucket
    kms_key_id: str | None = None   # s3: SSE-KMS key instead of SSE-S3


@dataclass(frozen=True)
class KeysConfig:
    """``keys:`` of reconciler.yaml: where the key of the state's hashes and of saved plans
    comes from (reconciler.states.keys.key_source reads it)."""

    source: str = "file"            # "file" | "env" | "kms"
    file: Path | None = None        # file: the key file (None: $XDG_CONFIG_HOME/reconciler/key)
    env: str | None = None          # env: the variable (None: RECONCILER_KEY)
    kms_key_id: str | None = None   # kms: the KMS key
    region: str | None = None       # kms: its region (None: the config's region, the chain)
    endpoint_url: str | None = None  # kms: a custom endpoint
    profile: str | None = None      # kms: the AWS profile


@dataclass(frozen=True)
class DriftConfig:
    """``drift:`` of reconciler.yaml: how incremental drift trusts its checkpoint."""

    overlap_seconds: float = 300.0          # listing reaches back this far before the checkpoint
    full_check_after_hours: float = 24.0    # list everything again when the last full check is older


@dataclass(frozen=True)
class PrimaryPolicy:
    """How the service treats primary image sets, as far as this account knows (the
    ``primaryImageSets`` section). The defaults follow the developer guide's words literally
    (docs/primary-image-sets.md): Patient- and Series-level elements cannot be updated on a
    primary image set, ``includeStudyImageSets`` is the way to change a study's Patient/Study
    elements on all its primary image sets at once, and ``force`` applies only to
    non-primary image sets."""

    restricted_levels: frozenset[str] = frozenset({"Patient", "Series"})
    study_wide_updates: str = "allowed"     # allowed | refused: does includeStudyImageSets lift it
    force: str = "refused"                  # refused | allowed on primary image sets
    study_consistent: bool = True           # Patient/Study changes go study-wide (groupStudies)


@dataclass(frozen=True)
class IgnoreRule:
    """Drift of these attributes of these specs is reported as ignored."""

    spec: str                       # glob on spec names
    attributes: tuple[str, ...]     # globs on managed paths; `*` stays inside one name or UID
    reason: str | None = None

    def matches(self, spec_name: str, managed_path: str) -> bool:
        if not fnmatchcase(spec_name, self.spec):
            return False
        return any(_glob_regex(pattern).match(managed_path) for pattern in self.attributes)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch would read "[...]" as a character class; here brackets are literal and "*"
    # never crosses a bracket, so Series[*].X does not match instance attributes.
    parts = []
    for char in pattern:
        parts.append("[^\\[\\]]*" if char == "*" else "[^\\[\\]]" if char == "?"
                     else re.escape(char))
    return re.compile("^" + "".join(parts) + "$")


@dataclass(frozen=True)
class Config:
    path: Path | None = None                 # the config file, None when there is none
    root: Path = field(default_factory=Path.cwd)   # its directory (absolute), or the cwd
    specs: tuple[Path, ...] = (Path("."),)   # spec paths, as shown in diagnostics
    datastore_id: str | None = None
    region: str | None = None
    state: StateConfig = field(default_factory=StateConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    redact: str = "auto"
    ignore: tuple[IgnoreRule, ...] = ()
    quotas: dict[str, float] = field(default_factory=dict)
    quota_headroom: float | None = None     # None: the pacer's default
    drift: DriftConfig = field(default_factory=DriftConfig)
    primary: PrimaryPolicy = field(default_factory=PrimaryPolicy)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)   # removed, moved, limits

    def __post_init__(self) -> None:
        if self.state.backend == "local" and self.state.path is None:
            object.__setattr__(self, "state", StateConfig(path=self.root / DEFAULT_LOCAL_PATH))

    def is_ignored(self, spec_name: str, managed_path: str) -> bool:
        return any(rule.matches(spec_name, managed_path) for rule in self.ignore)


def load_config(path: str | None) -> Config:
    """Read ``path``, or ``reconciler.yaml`` in the working directory if it exists, or return
    the defaults. Raises :class:`ConfigFileError` (a ConfigError) listing every problem."""
    if path is None:
        file = Path(DEFAULT_NAME)
        if not file.is_file():
            return Config()
    else:
        file = Path(path)
        if not file.exists():  # an explicit --config must exist (the default may not)
            raise ConfigError(f"config file not found: {file}")
        if not file.is_file():
            raise ConfigError(f"config path is not a file: {file}")
    name = str(file)
    documents, problems = load_file(file, name)
    if problems:
        raise ConfigFileError(problems, name)
    if len(documents) > 1:
        second = documents[1].start
        raise ConfigFileError([Diagnostic(name, second.line, second.column, "",
                                          "reconciler.yaml holds one document, not several")], name)
    data = documents[0].data if documents else {}
    doc = documents[0] if documents else None
    problems = []
    if doc is not None:
        for key in ("datastoreId", "region") if isinstance(data, dict) else ():
            text = doc.source_text((key,))
            if text is not None:
                data[key] = text
        if isinstance(data, dict):
            lifecycle.coerce(doc, data)
        problems, flagged = check(doc, data, "config.v1.schema.json")
        if isinstance(data, dict):
            problems += _check_ignore(doc, data, flagged)
            problems += lifecycle.check(doc, data, flagged)
    if problems:
        raise ConfigFileError(sorted(problems, key=lambda d: (d.line, d.column)), name)
    return _build(file, data, doc)


def _check_ignore(doc: Any, data: dict[str, Any], flagged: set[tuple]) -> list[Diagnostic]:
    problems = []
    rules = data.get("ignore")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        patterns = rule.get("attributes") if isinstance(rule, dict) else None
        for j, pattern in enumerate(patterns if isinstance(patterns, list) else []):
            path = ("ignore", i, "attributes", j)
            if is_flagged(path, flagged) or not isinstance(pattern, str):
                continue
            match = _ATTRIBUTE_GLOB.match(pattern)
            if not match:
                problems.append(doc.diagnostic(path, (
                    "not an attribute path: write Patient.KEY, Study.KEY, Series[UID].KEY, "
                    "Series[UID].Instances[UID].KEY or Series[UID]; * and ? are wildcards")))
                continue
            keyword = match["key"] or match["skey"]
            if keyword and not any(c in keyword for c in "*?") and not dictionary.is_tag(keyword) \
                    and not dictionary.keyword_exists(keyword):
                hint = dictionary.suggest_keyword(keyword)
                problems.append(doc.diagnostic(path, f"unknown DICOM keyword {keyword}"
                                               + (f"; did you mean {hint}?" if hint else "")))
    return problems


def _build(file: Path, data: dict[str, Any], doc: Any = None) -> Config:
    root = file.resolve().parent
    shown = file.parent   # relative when the user gave a relative path: nicer diagnostics
    specs = data.get("specs", ".")
    specs = [specs] if isinstance(specs, str) else specs
    state_data = data.get("state", {})
    backend = state_data.get("backend", "local")
    if backend == "s3":
        state = StateConfig("s3", None, state_data["bucket"], state_data.get("key", DEFAULT_S3_KEY),
                            state_data.get("region", data.get("region")),
                            state_data.get("endpointUrl"), state_data.get("profile"),
                            state_data.get("kmsKeyId"))
    else:
        state = StateConfig("local", root / state_data.get("path", DEFAULT_LOCAL_PATH))
    keys_data = data.get("keys", {})
    keys = KeysConfig(source=keys_data.get("source", "file"),
                      file=Path(keys_data["file"]).expanduser() if "file" in keys_data else None,
                      env=keys_data.get("env"), kms_key_id=keys_data.get("kmsKeyId"),
                      region=keys_data.get("region"), endpoint_url=keys_data.get("endpointUrl"),
                      profile=keys_data.get("profile"))
    ignore = tuple(IgnoreRule(rule.get("spec", "*"), tuple(rule["attributes"]), rule.get("reason"))
                   for rule in data.get("ignore", []))
    return Config(
        path=file, root=root,
        specs=tuple(Path(_normalise(shown / entry)) for entry in specs),
        datastore_id=data.get("datastoreId"), region=data.get("region"), state=state, keys=keys,
        redact=data.get("redact", "auto"), ignore=ignore,
        quotas={op: float(rate) for op, rate in data.get("quotas", {}).items()},
        quota_headroom=(float(data["quotaHeadroom"]) if "quotaHeadroom" in data else None),
        primary=_primary_policy(data),
        lifecycle=lifecycle.build(data, str(file), doc),
        drift=DriftConfig(**{name: float(data.get("drift", {})[key]) for name, key in (
            ("overlap_seconds", "overlapSeconds"), ("full_check_after_hours", "fullCheckAfterHours"))
            if key in data.get("drift", {})}))


def _primary_policy(data: dict[str, Any]) -> PrimaryPolicy:
    section = data.get("primaryImageSets", {})
    levels = section.get("restrictedLevels", sorted(PrimaryPolicy.restricted_levels))
    return PrimaryPolicy(
        restricted_levels=frozenset(levels),
        study_wide_updates=section.get("studyWideUpdates", "allowed"),
        force=section.get("force", "refused"),
        study_consistent=section.get("studyConsistent", data.get("groupStudies", True)))


def _normalise(path: Path) -> str:
    return os.path.normpath(path)
