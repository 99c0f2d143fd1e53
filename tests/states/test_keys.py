"""Key sources (reconciler/states/keys.py, kms.py): the key file, the environment variable and
KMS (moto's, in process), and the envelopes they seal. Every message names the source and
never holds key material."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading

import boto3
import pytest
from moto import mock_aws

from reconciler.core.errors import ConfigError, KeyUnavailableError
from reconciler.states.keys import (
    EnvKeySource, FileKeySource, SealError, default_key_file, key_source, parse_secret,
    parse_source, seal, unseal)
from reconciler.states.kms import KmsKeySource

CONTEXT = {"reconciler:purpose": "test", "reconciler:lineage": "l-1"}
SECRET = b"0123456789abcdef0123456789abcdef"            # 32 bytes


def env_source(secret: bytes = SECRET, name: str = "RECONCILER_KEY") -> EnvKeySource:
    return EnvKeySource(name, environ={name: base64.b64encode(secret).decode()})


# -- the key file ----------------------------------------------------------------------------
def test_the_key_file_is_created_on_first_use_private_with_one_notice(tmp_path, caplog):
    path = tmp_path / "config" / "reconciler" / "key"
    with caplog.at_level(logging.WARNING):
        data_key, wrapping = FileKeySource(path).new_data_key(CONTEXT)
    assert caplog.text.count("created the key file") == 1 and str(path) in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    secret = parse_secret(path.read_text())
    assert secret is not None and len(secret) == 32
    assert path.read_text().strip() not in caplog.text
    caplog.clear()
    again = FileKeySource(path)                           # another run: the same key, no notice
    with caplog.at_level(logging.WARNING):
        assert again.open_data_key(wrapping, CONTEXT, "it") == data_key
    assert caplog.text == ""
    assert [p.name for p in path.parent.iterdir()] == ["key"]   # no temporary file left


def test_runs_creating_the_key_file_at_once_end_up_with_one_key(tmp_path):
    path = tmp_path / "key"
    sources = [FileKeySource(path) for _ in range(8)]
    results = [None] * 8

    def create(i):
        results[i] = sources[i].key_id(create=True)
    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(results)) == 1


def test_a_missing_or_unfit_key_file_is_named_and_never_quoted(tmp_path):
    path = tmp_path / "key"
    wrapping = FileKeySource(tmp_path / "other").new_data_key(CONTEXT)[1]
    with pytest.raises(KeyUnavailableError, match=f"the state x needs a key file \\(key id "
                                                  f"[0-9a-f]{{16}}\\): there is no key file at "
                                                  f"{path}"):
        FileKeySource(path).open_data_key(wrapping, CONTEXT, "the state x")
    assert not path.exists()                              # opening never creates a key
    path.write_text(base64.b64encode(SECRET).decode() + "\n")
    path.chmod(0o644)
    with pytest.raises(KeyUnavailableError, match=r"can be read by others \(mode 0o644\); make "
                                                  r"it private: chmod 600") as caught:
        FileKeySource(path).open_data_key(wrapping, CONTEXT, "it")
    assert base64.b64encode(SECRET).decode() not in str(caught.value)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(KeyUnavailableError, match="does not hold a key") as caught:
        FileKeySource(path).open_data_key(wrapping, CONTEXT, "it")
    assert "not a key" not in str(caught.value)


def test_the_default_key_file_follows_xdg_config_home(tmp_path):
    assert default_key_file({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "reconciler" / "key"
    assert default_key_file({"XDG_CONFIG_HOME": "relative"}).parts[-3:] == (".config", "reconciler", "key")
    # The suite runs with its own XDG_CONFIG_HOME: nothing here touches the real home.
    assert str(default_key_file()).startswith(os.environ["XDG_CONFIG_HOME"])


# -- the environment variable ---------------------------------------------------------------
def test_an_environment_variable_key_in_hex_or_base64(tmp_path):
    for text in (SECRET.hex(), base64.b64encode(SECRET).decode(),
                 base64.urlsafe_b64encode(SECRET).decode().rstrip("=")):
        assert parse_secret(text) == SECRET
    assert parse_secret(base64.b64encode(SECRET[:31]).decode()) is None     # too short
    with pytest.raises(KeyUnavailableError, match="the environment variable CI_KEY is not set"):
        EnvKeySource("CI_KEY", environ={}).new_data_key(CONTEXT)
    with pytest.raises(KeyUnavailableError, match="CI_KEY does not hold a key") as caught:
        EnvKeySource("CI_KEY", environ={"CI_KEY": "hunter2-is-my-password"}).new_data_key(CONTEXT)
    assert "hunter2" not in str(caught.value)


def test_a_key_file_and_an_environment_variable_with_one_secret_open_each_others_keys(tmp_path):
    path = tmp_path / "key"
    path.write_text(SECRET.hex() + "\n")
    path.chmod(0o600)
    data_key, wrapping = FileKeySource(path).new_data_key(CONTEXT)
    assert env_source().open_data_key(wrapping, CONTEXT, "it") == data_key
    with pytest.raises(KeyUnavailableError, match="was sealed with a key file \\(key id "
                                                  "[0-9a-f]{16}\\); environment variable "
                                                  "RECONCILER_KEY holds another key"):
        env_source(b"x" * 32).open_data_key(wrapping, CONTEXT, "it")


# -- envelopes ------------------------------------------------------------------------------
def test_an_envelope_opens_only_unchanged_in_its_context_with_its_key():
    source = env_source()
    doc = seal(source, b"payload", CONTEXT, {"lineage": "l-1"})
    assert b"payload" not in str(doc).encode() and SECRET.hex() not in str(doc)
    assert unseal(source, doc, CONTEXT, "it") == b"payload"
    for changed in ({**doc, "lineage": "l-2"}, {**doc, "nonce": base64.b64encode(b"0" * 12).decode()},
                    {**doc, "ciphertext": doc["ciphertext"][:-4] + "AAA="}):
        with pytest.raises(SealError):
            unseal(source, changed, CONTEXT, "it")
    with pytest.raises(SealError):
        unseal(source, doc, {**CONTEXT, "reconciler:lineage": "l-2"}, "it")
    with pytest.raises(KeyUnavailableError, match="holds another key"):
        unseal(env_source(b"y" * 32), doc, CONTEXT, "it")


def test_parse_source_and_the_configured_source():
    assert isinstance(parse_source("file"), FileKeySource)
    assert parse_source("file:/tmp/k").describe() == "key file /tmp/k"
    assert parse_source("env:OLD_KEY").describe() == "environment variable OLD_KEY"
    kms = parse_source("kms:arn:aws:kms:us-east-1:1:key/x", {"region": "eu-west-1"})
    assert kms.describe() == "KMS key arn:aws:kms:us-east-1:1:key/x"
    for bad in ("vault", "kms", "kms:"):
        with pytest.raises(ConfigError, match="not a key source"):
            parse_source(bad)
    with pytest.raises(ConfigError, match="keys.kmsKeyId"):
        key_source({"source": "kms"})
    assert key_source({"source": "env"}).describe() == "environment variable RECONCILER_KEY"
    assert repr(env_source()) == "<EnvKeySource environment variable RECONCILER_KEY>"


# -- KMS (moto) -----------------------------------------------------------------------------
@pytest.fixture
def kms(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("kms", region_name="us-east-1")
        arn = client.create_key(Description="reconciler test")["KeyMetadata"]["Arn"]
        client.create_alias(AliasName="alias/reconciler-test", TargetKeyId=arn)
        yield client, arn


def test_kms_data_keys_open_by_alias_or_arn_in_their_context(kms):
    client, arn = kms
    source = KmsKeySource("alias/reconciler-test", region="us-east-1")
    data_key, wrapping = source.new_data_key(CONTEXT)
    assert wrapping["source"] == "kms" and wrapping["kms_key_id"] == arn
    assert len(data_key) == 32 and base64.b64encode(data_key).decode() not in str(wrapping)
    assert source.open_data_key(wrapping, CONTEXT, "it") == data_key
    assert KmsKeySource(arn, region="us-east-1").open_data_key(wrapping, CONTEXT, "it") == data_key
    with pytest.raises(SealError, match="InvalidCiphertextException"):
        source.open_data_key(wrapping, {**CONTEXT, "reconciler:lineage": "l-2"}, "it")


def test_kms_refuses_a_data_key_of_another_kms_key_naming_both(kms):
    client, arn = kms
    other = client.create_key()["KeyMetadata"]["Arn"]
    data_key, wrapping = KmsKeySource(arn, region="us-east-1").new_data_key(CONTEXT)
    with pytest.raises(KeyUnavailableError, match=f"the plan p was sealed with KMS key {arn}, "
                                                  f"not with KMS key {other}"):
        KmsKeySource(other, region="us-east-1").open_data_key(wrapping, CONTEXT, "the plan p")
    client.create_alias(AliasName="alias/other", TargetKeyId=other)     # an alias: KMS says no
    with pytest.raises(KeyUnavailableError, match=f"sealed with KMS key {arn}.*could not be "
                                                  f"used \\(AccessDeniedException"):
        KmsKeySource("alias/other", region="us-east-1").open_data_key(wrapping, CONTEXT, "p")


def test_kms_failures_name_the_key_and_the_code(kms):
    client, arn = kms
    _, wrapping = KmsKeySource(arn, region="us-east-1").new_data_key(CONTEXT)
    with pytest.raises(KeyUnavailableError, match="a new data key: KMS key alias/none could "
                                                  "not be used \\(NotFoundException"):
        KmsKeySource("alias/none", region="us-east-1").new_data_key(CONTEXT)
    with pytest.raises(KeyUnavailableError, match="was sealed with KMS key .*this run's key "
                                                  "source is environment variable"):
        env_source().open_data_key(wrapping, CONTEXT, "it")
    broken = {**wrapping, "wrapped": base64.b64encode(b"not a blob").decode()}
    with pytest.raises(SealError, match="KMS refused its data key"):
        KmsKeySource(arn, region="us-east-1").open_data_key(broken, CONTEXT, "it")
