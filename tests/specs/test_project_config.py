"""reconciler.yaml: defaults, every setting, and problems reported like spec problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_helpers import DATASTORE, at

from reconciler.core.errors import ConfigError, SpecError
from reconciler.spec.config import Config, ConfigFileError, IgnoreRule, StateConfig, load_config


def problems(project, text: str) -> list[str]:
    project.write("reconciler.yaml", text)
    with pytest.raises(ConfigFileError) as info:
        load_config(None)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, SpecError)
    assert str(info.value).endswith("found in reconciler.yaml")
    return [str(d) for d in info.value.diagnostics]


def test_no_config_file_gives_the_defaults(project):
    config = load_config(None)
    assert config.path is None and config.root == project.root
    assert config.specs == (Path("."),) and config.datastore_id is None
    assert config.state == StateConfig("local", project.root / ".reconciler/state.json")
    assert config.redact == "auto" and config.ignore == () and config.quotas == {}
    assert Config().state.path == Path.cwd() / ".reconciler/state.json"


def test_an_explicit_config_must_exist(project):
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_every_setting(project):
    project.write("conf/reconciler.yaml", f"""
apiVersion: reconciler/v1
specs: specs
datastoreId: {DATASTORE}
region: eu-west-1
state: {{backend: local, path: state/s.json}}
redact: always
ignore:
  - spec: "ct-*"
    attributes: [Study.StudyDescription, "Series[*].SeriesDescription"]
    reason: the PACS rewrites these
  - attributes: ["Series[*].Instances[*].ImageComments"]
quotas: {{UpdateImageSetMetadata: 10, GetImageSetMetadata: 2000}}
""")
    config = load_config("conf/reconciler.yaml")
    assert config.path == Path("conf/reconciler.yaml")
    assert config.root == project.root / "conf"
    assert config.specs == (Path("conf/specs"),)
    assert config.datastore_id == DATASTORE and config.region == "eu-west-1"
    assert config.state == StateConfig("local", project.root / "conf/state/s.json")
    assert config.redact == "always"
    assert config.ignore[0] == IgnoreRule("ct-*", ("Study.StudyDescription",
                                                   "Series[*].SeriesDescription"),
                                          "the PACS rewrites these")
    assert config.ignore[1].spec == "*"
    assert config.quotas == {"UpdateImageSetMetadata": 10.0, "GetImageSetMetadata": 2000.0}


def test_s3_state(project):
    project.write("reconciler.yaml", "region: us-east-1\nstate: {backend: s3, bucket: my-state}\n")
    assert load_config(None).state == StateConfig("s3", None, "my-state", "reconciler/state.json",
                                                  "us-east-1")
    project.write("reconciler.yaml", "state:\n  backend: s3\n  bucket: my-state\n  key: t/s.json\n"
                  "  region: eu-west-1\n  endpointUrl: http://127.0.0.1:9000\n  profile: ci\n"
                  "  kmsKeyId: alias/state\n")
    assert load_config(None).state == StateConfig("s3", None, "my-state", "t/s.json", "eu-west-1",
                                                  "http://127.0.0.1:9000", "ci", "alias/state")


def test_ignore_rules_match_managed_paths():
    rule = IgnoreRule("ct-*", ("Study.StudyDescription", "Series[*].SeriesDescription",
                               "Series[1.2.3].Instances[*]"))
    assert rule.matches("ct-1", "Study.StudyDescription")
    assert rule.matches("ct-1", "Series[1.2.840.1].SeriesDescription")
    assert not rule.matches("mr-1", "Study.StudyDescription")
    assert not rule.matches("ct-1", "Series[1.2].Instances[1.2.3].SeriesDescription")
    assert rule.matches("ct-1", "Series[1.2.3].Instances[1.2.3.4]")
    assert not rule.matches("ct-1", "Series[1.2.3].Instances[1.2.3.4].ImageComments")
    config = Config(ignore=(rule,))
    assert config.is_ignored("ct-9", "Study.StudyDescription")
    assert not config.is_ignored("ct-9", "Study.StudyDate")


def test_config_problems_are_diagnostics(project):
    text = (f"specs: []\ndatastoreId: {DATASTORE[:-1]}\nregion: Europe\n"
            "state: {backend: s3, path: x}\nredact: alway\n"
            "quotas: {UpdateImageSetMetadat: 2, GetImageSet: 0}\n"
            "ignore:\n  - spec: 'ct-*'\n    attributes: [Study.StudyDescripton, Foo.bar]\n"
            "  - {spec: x}\nstates: {}\n")
    def d(needle, path, message, occurrence=1):
        line, column = at(text, needle, occurrence)
        return f"reconciler.yaml:{line}:{column}: {path}: {message}"
    assert problems(project, text) == [
        d("[]", "specs", "must be a path or a non-empty list of paths"),
        d(DATASTORE[:-1], "datastoreId", "must be 32 lower-case letters or digits ([0-9a-z]{32})"),
        d("Europe", "region", "must be an AWS region such as us-east-1"),
        d("{backend: s3", "state", "missing required key bucket"),
        d("x}", "state.path", "path is for the local backend; the s3 backend uses bucket and key"),
        d("alway", "redact", "must be one of: auto, always, never; did you mean always?"),
        d("UpdateImageSetMetadat", "quotas.UpdateImageSetMetadat",
          "unknown HealthImaging operation; did you mean UpdateImageSetMetadata?"),
        d("0}", "quotas.GetImageSet", "must be a number of requests per second greater than 0"),
        d("Study.StudyDescripton", "ignore[0].attributes[0]",
          "unknown DICOM keyword StudyDescripton; did you mean StudyDescription?"),
        d("Foo.bar", "ignore[0].attributes[1]",
          "not an attribute path: write Patient.KEY, Study.KEY, Series[UID].KEY, "
          "Series[UID].Instances[UID].KEY or Series[UID]; * and ? are wildcards"),
        d("{spec: x}", "ignore[1]", "missing required key attributes"),
        d("states", "states", "unknown key states; did you mean state?"),
    ]


def test_local_state_refuses_s3_settings(project):
    assert problems(project, "state: {bucket: my-bucket}\n") == [
        "reconciler.yaml:1:17: state.bucket: bucket, key, region, endpointUrl, profile and "
        "kmsKeyId need backend: s3"]


def test_config_yaml_errors(project):
    syntax, = problems(project, "a: [\n")
    assert syntax.startswith("reconciler.yaml:2:1: YAML syntax error: ")   # libyaml or PyYAML words
    assert problems(project, "redact: auto\nredact: never\n") == [
        "reconciler.yaml:2:1: redact: duplicate key (first defined at line 1)"]
    assert problems(project, "a: 1\n---\nb: 2\n") == [
        "reconciler.yaml:3:1: reconciler.yaml holds one document, not several"]
    assert problems(project, "- a\n") == ["reconciler.yaml:1:1: must be a mapping, not a list"]


def test_an_empty_config_is_the_defaults(project):
    project.write("reconciler.yaml", "# nothing yet\n")
    config = load_config(None)
    assert config.path == Path("reconciler.yaml") and config.specs == (Path("."),)


def test_the_keys_section(project):
    from reconciler.spec.config import KeysConfig
    from reconciler.states.keys import FileKeySource, key_source

    assert Config().keys == KeysConfig()          # default: the key file
    project.write("reconciler.yaml", "region: eu-west-1\nkeys:\n  source: kms\n"
                  "  kmsKeyId: alias/reconciler\n  endpointUrl: http://127.0.0.1:4566\n")
    config = load_config(None)
    assert config.keys == KeysConfig("kms", None, None, "alias/reconciler", None,
                                     "http://127.0.0.1:4566", None)
    assert key_source(config.keys, region=config.region).describe() == "KMS key alias/reconciler"
    project.write("reconciler.yaml", "keys: {source: env, env: CI_RECONCILER_KEY}\n")
    assert key_source(load_config(None).keys).describe() == "environment variable CI_RECONCILER_KEY"
    project.write("reconciler.yaml", "keys: {file: ~/secrets/reconciler.key}\n")
    source = key_source(load_config(None).keys)
    assert isinstance(source, FileKeySource) and source.path == Path.home() / "secrets/reconciler.key"


def test_keys_problems_name_file_line_and_field(project):
    text = ("keys:\n  source: vault\n  file: keys/reconciler.key\n  kmsKeyId: alias/x\n"
            "  env: 'NOT A NAME'\n  passphrase: x\n")
    def d(needle, path, message):
        line, column = at(text, needle)
        return f"reconciler.yaml:{line}:{column}: {path}: {message}"
    assert problems(project, text) == [
        d("vault", "keys.source", "must be file, env or kms"),
        d("keys/reconciler.key", "keys.file", "must be an absolute path or start with ~/ (a key "
          "file beside the specs would end up in Git)"),
        d("alias/x", "keys.kmsKeyId", "kmsKeyId, region, endpointUrl and profile need source: kms"),
        d("'NOT A NAME'", "keys.env", "must be an environment variable name (letters, digits, _)"),
        d("'NOT A NAME'", "keys.env", "env needs source: env"),
        d("passphrase", "keys.passphrase", "unknown key passphrase"),
    ]
    assert problems(project, "keys: {source: kms}\n") == [
        "reconciler.yaml:1:7: keys: missing required key kmsKeyId"]
    assert problems(project, "keys: {source: env, file: /k}\n") == [
        "reconciler.yaml:1:27: keys.file: file needs source: file"]
