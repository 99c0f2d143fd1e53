"""The wire format: routes, raw responses, error bodies, operations, host prefix, threads."""

from __future__ import annotations

import gzip
import json
import re
import threading
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from emulator_support import CT_STUDY, Api


def _raw(emulator, method, path, body=None, headers=None):
    request = urllib.request.Request(emulator.url + path, body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_get_image_set_metadata_is_raw_gzip(api):
    image_set = api.image_set(CT_STUDY)
    status, headers, body = _raw(api.emulator, "POST",
                                 f"/datastore/{api.ds}/imageSet/{image_set}/getImageSetMetadata")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Encoding"] == "gzip"
    assert body[:2] == b"\x1f\x8b"
    doc = json.loads(gzip.decompress(body))
    assert (doc["SchemaVersion"], doc["DatastoreID"], doc["ImageSetID"]) == ("1.1", api.ds,
                                                                             image_set)
    blob = api.client.get_image_set_metadata(datastoreId=api.ds, imageSetId=image_set)
    assert blob["imageSetMetadataBlob"].read()[:2] == b"\x1f\x8b"     # boto3 does not decompress
    assert (blob["contentType"], blob["contentEncoding"]) == ("application/json", "gzip")


def test_raw_json_shapes(api):
    image_set = api.image_set(CT_STUDY)
    api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "X"}}})
    _, headers, body = _raw(api.emulator, "POST",
                            f"/datastore/{api.ds}/imageSet/{image_set}/listImageSetVersions")
    assert headers["Content-Type"] == "application/json"
    item = json.loads(body)["imageSetPropertiesList"][0]
    assert item["ImageSetWorkflowStatus"] == "UPDATED" and "imageSetWorkflowStatus" not in item
    assert isinstance(item["createdAt"], (int, float)) and isinstance(item["updatedAt"], float)
    _, _, body = _raw(api.emulator, "POST", f"/datastore/{api.ds}/searchImageSets", b"{}",
                      {"Content-Type": "application/json"})
    summary = json.loads(body)["imageSetsMetadataSummaries"][0]
    assert isinstance(summary["version"], int)
    assert isinstance(summary["DICOMTags"]["DICOMSeriesNumber"], int)
    assert isinstance(summary["DICOMTags"]["DICOMNumberOfStudyRelatedInstances"], int)


def test_error_wire_form(api):
    status, headers, body = _raw(api.emulator, "POST",
                                 f"/datastore/{api.ds}/imageSet/{'0' * 32}/getImageSet")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert set(json.loads(body)) == {"message"}
    status, headers, body = _raw(api.emulator, "GET", "/no/such/route")
    assert status == 404 and headers["x-amzn-ErrorType"] == "UnknownOperationException"


@pytest.mark.parametrize("path, body, fragment", [
    ("updateImageSetMetadata", b'{"revertToVersionId": "1"}', "Value null at 'latestVersionId'"),
    ("updateImageSetMetadata?latestVersion=1&force=maybe", b'{"revertToVersionId": "1"}',
     "must be true or false"),
    ("updateImageSetMetadata?latestVersion=x1", b'{"revertToVersionId": "1"}',
     "regular expression pattern: \\d+"),
    ("updateImageSetMetadata?latestVersion=1", b'{"revertToVersionId": ', "parse the request"),
    ("updateImageSetMetadata?latestVersion=1", b'{"DICOMUpdates": {"updatableAttributes": "@@"}}',
     "valid base64"),
    ("updateImageSetMetadata?latestVersion=1", b"", "Value null at 'updateImageSetMetadataUpdates'"),
    ("listImageSetVersions?maxResults=0", b"", "greater than or equal to 1"),
])
def test_generic_request_validation(api, path, body, fragment):
    image_set = api.image_set(CT_STUDY)
    status, headers, raw = _raw(api.emulator, "POST",
                                f"/datastore/{api.ds}/imageSet/{image_set}/{path}", body,
                                {"Content-Type": "application/json"})
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    message = json.loads(raw)["message"]
    assert fragment in message, message
    assert message.startswith("1 validation error detected: ") or "parse" in message


def test_sensitive_values_are_not_echoed(api):
    with pytest.raises(api.exceptions.ValidationException) as err:
        api.client.search_image_sets(datastoreId=api.ds, searchCriteria={"filters": [
            {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": "PATIENT-SECRET"}]}]})
    assert "PATIENT-SECRET" not in str(err.value)


def test_tags_on_percent_encoded_arns(api):
    image_set = api.image_set(CT_STUDY)
    arn = api.get(image_set)["imageSetArn"]
    ds_arn = api.client.get_datastore(datastoreId=api.ds)["datastoreProperties"]["datastoreArn"]
    assert arn == f"{ds_arn}/imageset/{image_set}"
    for resource in (arn, ds_arn):
        api.client.tag_resource(resourceArn=resource, tags={"team": "radiology", "env": "test"})
        api.client.untag_resource(resourceArn=resource, tagKeys=["env"])
        assert api.client.list_tags_for_resource(resourceArn=resource)["tags"] == {
            "team": "radiology"}
    encoded = urllib.request.quote(arn, safe="")
    status, _, body = _raw(api.emulator, "GET", f"/tags/{encoded}")
    assert status == 200 and json.loads(body) == {"tags": {"team": "radiology"}}
    with pytest.raises(api.exceptions.ResourceNotFoundException):
        api.client.list_tags_for_resource(resourceArn=ds_arn.replace(api.ds, "0" * 32))
    with pytest.raises(api.exceptions.ValidationException):
        api.client.list_tags_for_resource(resourceArn="arn:aws:s3:::bucket")
    with pytest.raises(api.exceptions.ValidationException):
        api.client.tag_resource(resourceArn=arn, tags={"aws:reserved": "x"})


def test_region_comes_from_the_signature(api):
    client = boto3.client("medical-imaging", endpoint_url=api.emulator.url,
                          region_name="eu-west-1", config=Config(inject_host_prefix=False))
    arn = client.get_image_set(datastoreId=api.ds,
                               imageSetId=api.image_set(CT_STUDY))["imageSetArn"]
    assert re.fullmatch(r"arn:aws:medical-imaging:eu-west-1:123456789012:datastore/"
                        r"[0-9a-z]{32}/imageset/[0-9a-z]{32}", arn)


def test_host_prefix_must_be_disabled(api):
    prefixed = boto3.client("medical-imaging", endpoint_url=api.emulator.url,
                            region_name="us-east-1",
                            config=Config(retries={"total_max_attempts": 1},
                                          connect_timeout=2))
    assert prefixed.list_datastores()["datastoreSummaries"]      # control plane: no prefix
    with pytest.raises(EndpointConnectionError, match="runtime-127.0.0.1"):
        prefixed.get_image_set(datastoreId=api.ds, imageSetId=api.image_set(CT_STUDY))


def test_operations_not_implemented_answer_clearly(api):
    client = api.client
    assert client.list_dicom_import_jobs(datastoreId=api.ds)["jobSummaries"] == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_dicom_import_job(datastoreId=api.ds, jobId="abc")
    with pytest.raises(client.exceptions.ValidationException, match="not supported"):
        client.get_image_frame(datastoreId=api.ds, imageSetId=api.image_set(CT_STUDY),
                               imageFrameInformation={"imageFrameId": "0" * 32})


def test_every_model_operation_is_routed(api):
    from reconciler.emulator.protocol import routes, service_model

    routed = {route.operation.name for route in routes()}
    assert routed == set(service_model().operation_names)
    for name in service_model().operation_names:
        from botocore import xform_name
        assert callable(getattr(api.emulator.backend, xform_name(name)))


def test_update_failed_messages_fit_the_model_pattern(api):
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "update_failed",
                            message="bad {chars}; here [x] = <y>", times=1)
    message = api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "X"}}})["message"]
    assert re.fullmatch(r"[\w -:`]+", message) and "bad" in message


def test_concurrent_requests(api):
    image_set = api.image_set(CT_STUDY)
    errors: list[Exception] = []

    def worker():
        client = Api(api.emulator).client
        try:
            for _ in range(10):
                client.get_image_set(datastoreId=api.ds, imageSetId=image_set)
                client.get_image_set_metadata(datastoreId=api.ds, imageSetId=image_set)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_threaded_emulator_starts_and_stops_cleanly():
    """Each start serves at once; each stop closes the port and ends the server thread (tests
    start hundreds of emulators, one per test)."""
    import socket

    from reconciler.emulator.server import ThreadedEmulator

    for _ in range(5):
        with ThreadedEmulator() as emu:
            assert _raw(emu, "GET", "/_emulator/health")[0] == 200
            port = int(emu.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_session_fixtures(emulator, emulator_client):
    """tests/conftest.py's fixtures: a seeded emulator and a working client for it."""
    stores = emulator_client.list_datastores()["datastoreSummaries"]
    assert [s["datastoreId"] for s in stores] == [emulator.datastore_id]
    found = emulator_client.search_image_sets(datastoreId=emulator.datastore_id)
    assert len(found["imageSetsMetadataSummaries"]) == len(emulator.image_set_ids) == 5
    assert emulator.backend.settings.update_delay == 0.05
