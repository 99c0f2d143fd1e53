"""What only the S3 backend does: conditional requests, encryption, retried writes that landed."""

from __future__ import annotations

import boto3
import botocore.exceptions
import pytest

from reconciler.core.errors import StateConflictError, StateError
from reconciler.states import ImageSetRecord, State, open_backend
from reconciler.states.s3 import S3Backend, make_client

from .conftest import BUCKET, KEY, REGION


def _sent(backend: S3Backend, operation: str) -> list[dict]:
    """Record the HTTP headers of every ``operation`` request the backend sends."""
    seen: list[dict] = []
    backend._client.meta.events.register(
        f"before-send.s3.{operation}", lambda request, **_: seen.append(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}))
    return seen


def test_writes_are_compare_and_swap_and_the_lock_is_create_only(s3):
    backend = s3.open()
    puts = _sent(backend, "PutObject")
    state = State.new()
    backend.write(state)
    backend.write(state)
    with backend.lock("apply"):
        pass
    first, second, lock = puts
    assert first.get("If-None-Match") == "*" and "If-Match" not in first
    assert second.get("If-Match") and "If-None-Match" not in second
    assert lock.get("If-None-Match") == "*"
    for headers in puts:
        assert headers["x-amz-server-side-encryption"] == "AES256"


def test_objects_are_stored_encrypted(s3):
    client = make_client(REGION)
    backend = s3.open()
    backend.write(State.new())
    assert client.head_object(Bucket=BUCKET, Key=KEY)["ServerSideEncryption"] == "AES256"
    with backend.lock("apply"):
        assert client.head_object(Bucket=BUCKET, Key=KEY + ".lock")["ServerSideEncryption"] == "AES256"


def test_kms_encryption_when_a_key_is_configured(s3):
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    backend = open_backend({**s3.config, "kms_key_id": key_id}, s3.root)
    backend.write(State.new())
    head = make_client(REGION).head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]


def test_unlock_deletes_only_the_lock_it_looked_at(s3):
    backend = s3.open()
    deletes = _sent(backend, "DeleteObject")
    with backend.lock("apply"):
        pass
    assert deletes[0].get("If-Match")


def _failing_after_landing(backend: S3Backend, code: str = "PreconditionFailed", status: int = 412):
    """A put that lands and then answers an error, as when botocore retried a timed-out attempt
    that had in fact succeeded."""
    real = backend._client.put_object

    def put_object(**kwargs):
        real(**kwargs)
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 1}},
            "PutObject")
    backend._client.put_object = put_object
    return real


def test_a_retried_state_write_that_had_landed_is_a_success(s3):
    backend = s3.open()
    state = State.new()
    real = _failing_after_landing(backend)
    backend.write(state)
    assert state.serial == 1
    backend._client.put_object = real
    backend.write(state)                             # and the ETag it adopted is right
    assert s3.open().read().serial == 2


def test_a_retried_lock_that_had_landed_is_ours(s3):
    backend = s3.open()
    _failing_after_landing(backend)
    with backend.lock("apply", timeout=0) as info:
        assert s3.open().lock_info() == info
    assert s3.open().lock_info() is None


def test_a_write_that_fails_keeps_the_errored_file_and_says_how_to_push_it(s3):
    backend = open_backend({**s3.config, "bucket": "no-such-bucket-here"}, s3.root)
    state = State.new()
    state.put("s", ImageSetRecord("d" * 32, "1" * 32, "1", "2", "a" * 64))
    with pytest.raises(StateError) as caught:
        backend.write(state)
    assert not isinstance(caught.value, StateConflictError)
    message = str(caught.value)
    errored = s3.root / "errored.state.json"
    assert "s3://no-such-bucket-here/" in message and "NoSuchBucket" in message
    assert f"aws s3 cp {errored} s3://no-such-bucket-here/{KEY} --sse AES256" in message
    assert State.from_json(errored.read_bytes()).get("s", "1" * 32) is not None
    assert state.serial == 0


def test_access_problems_name_the_object(s3):
    backend = open_backend({**s3.config, "bucket": "no-such-bucket-here"}, s3.root)
    with pytest.raises(StateError, match=r"cannot read s3://no-such-bucket-here/team/state.json: NoSuchBucket"):
        backend.read()


def test_moto_honours_the_conditions_this_backend_relies_on(s3):
    """If a moto upgrade stopped checking these, the conformance suite would prove nothing."""
    client = make_client(REGION)
    first = client.put_object(Bucket=BUCKET, Key="probe", Body=b"1", IfNoneMatch="*")

    def refused(call, **kwargs) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            call(Bucket=BUCKET, Key="probe", **kwargs)
        return caught.value.response["Error"]["Code"]

    assert refused(client.put_object, Body=b"2", IfNoneMatch="*") == "PreconditionFailed"
    assert refused(client.put_object, Body=b"2", IfMatch='"0000"') == "PreconditionFailed"
    assert refused(client.delete_object, IfMatch='"0000"') == "PreconditionFailed"
    client.put_object(Bucket=BUCKET, Key="probe", Body=b"2", IfMatch=first["ETag"])
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.put_object(Bucket=BUCKET, Key="absent", Body=b"1", IfMatch='"0000"')
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"
