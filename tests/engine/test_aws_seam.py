"""The AWS seam through boto3 over HTTP against the emulator: host-prefix handling, gzip
metadata, paging, and the mapping of every service error to the project's error classes."""

import gzip
import json

import pytest

from reconciler.core import errors
from reconciler.healthimaging.aws import (
    BotoHealthImaging, ClientSettings, decode_metadata, make_client)


def test_custom_endpoint_turns_host_prefix_injection_off_and_aws_keeps_it(monkeypatch):
    local = make_client(ClientSettings(endpoint_url="http://127.0.0.1:9"))
    assert local.meta.config.inject_host_prefix is False
    aws = make_client(ClientSettings(region="us-east-1"))
    assert aws.meta.config.inject_host_prefix is True
    assert aws.meta.endpoint_url == "https://medical-imaging.us-east-1.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", "http://127.0.0.1:9")
    from_env = make_client(ClientSettings())
    assert from_env.meta.endpoint_url == "http://127.0.0.1:9"
    assert from_env.meta.config.inject_host_prefix is False
    assert from_env.meta.config.retries["mode"] == "standard"


def test_protocol_reads_and_writes_through_the_emulator(emulator):
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emulator.url))
    ds = emulator.datastore_id
    summaries = list(hi.search_image_sets(ds))
    assert {s.image_set_id for s in summaries} == set(emulator.image_set_ids)
    assert all(s.version == "1" for s in summaries)
    image_set_id = summaries[0].image_set_id
    image_set = hi.get_image_set(ds, image_set_id)
    assert (image_set.version_id, image_set.state) == ("1", "ACTIVE")
    doc = hi.get_metadata(ds, image_set_id, "1")
    assert doc["ImageSetID"] == image_set_id and "Patient" in doc
    result = hi.update_metadata(ds, image_set_id, "1", updatable=json.dumps(
        {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "X"}}}))
    assert result.latest_version_id == "2"
    assert [v.version_id for v in hi.list_versions(ds, image_set_id)] == ["1", "2"]
    assert hi.calls["UpdateImageSetMetadata"] == 1


@pytest.mark.parametrize("call,error", [
    (lambda hi, ds, i: hi.get_image_set(ds, "0" * 32), errors.NotFoundError),
    (lambda hi, ds, i: hi.get_image_set(ds, "NOT-AN-ID"), errors.ServiceValidationError),
    (lambda hi, ds, i: hi.update_metadata(ds, i, "7", updatable='{"SchemaVersion":1.1}'),
     errors.ConflictError),
], ids=["not-found", "bad-id", "stale-version"])
def test_service_errors_map_to_project_errors(emulator, call, error):
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emulator.url))
    with pytest.raises(error) as raised:
        call(hi, emulator.datastore_id, emulator.image_set_ids[0])
    assert raised.value.retryable is False
    assert raised.value.status in (400, 404, 409)


def test_throttling_and_server_errors_are_retryable():
    assert errors.ThrottlingError().retryable and errors.InternalServerError().retryable
    assert not errors.ConflictError().retryable and not errors.AccessDeniedError().retryable


def test_unreachable_endpoint_is_an_endpoint_error():
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url="http://127.0.0.1:9",
                                                   connect_timeout=0.5, read_timeout=0.5))
    with pytest.raises(errors.EndpointError):
        hi.get_image_set("a" * 32, "b" * 32)


@pytest.mark.parametrize("raw,match", [
    (b"not gzip", "not valid gzip"),
    (gzip.compress(b"{truncated", mtime=0)[:-6], "not valid gzip"),
    (gzip.compress(b"{not json", mtime=0), "not valid JSON"),
    (gzip.compress(b"[1, 2]", mtime=0), "not a JSON object"),
], ids=["not-gzip", "truncated-gzip", "invalid-json", "not-an-object"])
def test_malformed_metadata_is_a_clear_error_naming_the_image_set(raw, match):
    with pytest.raises(errors.MalformedResponseError, match=f"image set abc: metadata is {match}"):
        decode_metadata(raw, "abc")


def test_throttles_absorbed_by_botocore_retries_still_slow_the_pacer(emulator):
    from reconciler.healthimaging.pacing import DEFAULT_HEADROOM, Pacer

    pacer = Pacer(rates={"GetImageSet": 1000})
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emulator.url), pacer=pacer)
    emulator.faults.add("GetImageSet", "throttle", times=2)
    image_set = hi.get_image_set(emulator.datastore_id, emulator.image_set_ids[0])
    assert image_set.version_id == "1"           # botocore retried and succeeded
    assert pacer.throttle_count() == 2           # and the pacer heard of both 429s
    # two in a row may still be the service's timing: the pacer realigned, kept its rate
    assert pacer.rate("GetImageSet") == pytest.approx(1000 * (1 - DEFAULT_HEADROOM))


def test_every_http_attempt_takes_a_token_botocore_retries_included(emulator):
    """The pacer spaces what the service sees: a request botocore retries after a 429 waits
    for a token like any other, taken right before it is sent."""
    from reconciler.healthimaging.pacing import Pacer

    taken: list[str] = []

    class Counting(Pacer):
        def acquire(self, op):
            taken.append(op)
            return super().acquire(op)

    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emulator.url),
                           pacer=Counting(rates={"GetImageSet": 1000}))
    emulator.faults.add("GetImageSet", "throttle", times=2)
    hi.get_image_set(emulator.datastore_id, emulator.image_set_ids[0])
    assert taken == ["GetImageSet"] * 3          # the call and botocore's two retries
    assert hi.calls == {"GetImageSet": 1}        # one call as the engine sees it
