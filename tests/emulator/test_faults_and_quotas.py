"""Fault injection (Python API, admin endpoint, --faults file) and --quotas aws throttling."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError
from emulator_support import CT_STUDY, MR_STUDY, Api

NO_RETRY = {"retries": {"total_max_attempts": 1}}
DESCRIPTION = {"Study": {"DICOM": {"StudyDescription": "NEW"}}}


def _admin(emulator, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(emulator.url + "/_emulator" + path, data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def test_latency(api):
    rule = api.emulator.faults.add("GetImageSet", "latency", seconds=0.3, times=1)
    image_set = api.image_set(CT_STUDY)
    started = time.monotonic()
    api.get(image_set)
    assert time.monotonic() - started >= 0.3
    assert rule.fired == 1
    api.get(image_set)
    assert rule.fired == 1                           # times=1: only once
    assert api.emulator.faults.list() == []          # spent, so gone


def test_500_before_the_write_is_retried_by_botocore(api):
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "error", imageSetId=image_set, times=1)
    response = api.update(image_set, DESCRIPTION, latest="1")
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert response["latestVersionId"] == "2"         # nothing was written by the failed try
    assert api.wait(image_set)["imageSetWorkflowStatus"] == "UPDATED"


def test_500_after_commit_makes_the_retry_conflict(api):
    """The retry hazard (docs/service-notes.md#retries-and-the-retry-hazard): the write
    landed, the retry gets 409."""
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "error_after", imageSetId=image_set,
                            times=1)
    with pytest.raises(api.exceptions.ConflictException) as err:
        api.update(image_set, DESCRIPTION, latest="1")
    assert err.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    final = api.wait(image_set)
    assert (final["versionId"], final["imageSetWorkflowStatus"]) == ("2", "UPDATED")
    assert api.meta(image_set)["Study"]["DICOM"]["StudyDescription"] == "NEW"


def test_500_after_commit_without_retries(make_api):
    api = make_api()
    client = Api(api.emulator, **NO_RETRY)
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "error_after", times=1)
    with pytest.raises(client.exceptions.InternalServerException) as err:
        client.update(image_set, DESCRIPTION, latest="1")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert api.latest(image_set) == "2"


@pytest.mark.parametrize("operation, code, status, expected", [
    ("UpdateImageSetMetadata", "AccessDeniedException", 403, "AccessDeniedException"),
    ("UpdateImageSetMetadata", "ServiceQuotaExceededException", 402,
     "ServiceQuotaExceededException"),
    ("GetImageSet", "ResourceNotFoundException", 404, "ResourceNotFoundException"),
    # GetImageSet's model does not list ServiceQuotaExceededException: never answered.
    ("GetImageSet", "ServiceQuotaExceededException", 500, "InternalServerException"),
])
def test_error_codes_and_statuses(make_api, operation, code, status, expected):
    api = Api(make_api().emulator, **NO_RETRY)
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add(operation, "error", code=code, message="injected", times=1)
    with pytest.raises(ClientError) as err:
        if operation == "GetImageSet":
            api.get(image_set)
        else:
            api.update(image_set, DESCRIPTION, latest="1")
    response = err.value.response
    assert response["Error"]["Code"] == expected
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == expected
    assert isinstance(err.value, getattr(api.exceptions, expected))


def test_forced_conflict_only_where_the_model_allows_it(api):
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("GetImageSetMetadata", "conflict", times=1)
    with pytest.raises(api.exceptions.ConflictException):
        api.meta(image_set)
    api.emulator.faults.add("GetDatastore", "conflict", times=1)
    with pytest.raises(api.exceptions.InternalServerException):
        Api(api.emulator, **NO_RETRY).client.get_datastore(datastoreId=api.ds)


def test_forced_update_failed(api):
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "update_failed",
                            message="INTERNAL_FAILURE: injected", times=1)
    final = api.apply(image_set, DESCRIPTION)
    assert (final["imageSetWorkflowStatus"], final["message"]) == (
        "UPDATE_FAILED", "INTERNAL_FAILURE: injected")
    assert api.apply(image_set, DESCRIPTION)["imageSetWorkflowStatus"] == "UPDATED"


def test_stay_locked_for_k_polls(make_api):
    api = make_api(update_delay=0)
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "lock", polls=3, times=1)
    api.update(image_set, DESCRIPTION)
    states = [api.get(image_set)["imageSetState"] for _ in range(5)]
    assert states == ["LOCKED", "LOCKED", "LOCKED", "ACTIVE", "ACTIVE"]


def test_stay_locked_for_seconds(make_api):
    from test_lifecycle import FakeClock

    clock = FakeClock()
    api = make_api(update_delay=1, clock=clock)
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "lock", seconds=10, times=1)
    api.update(image_set, DESCRIPTION)
    clock.now += 10.9
    assert api.get(image_set)["imageSetState"] == "LOCKED"
    clock.now += 0.1
    assert api.get(image_set)["imageSetState"] == "ACTIVE"


def test_throttling_burst_and_image_set_targeting(api):
    client = Api(api.emulator, **NO_RETRY)
    ct, mr = api.image_set(CT_STUDY), api.image_set(MR_STUDY)
    api.emulator.faults.add("GetImageSet", "throttle", imageSetId=ct, times=2)
    assert client.get(mr)["imageSetState"] == "ACTIVE"          # other image sets unaffected
    for _ in range(2):
        with pytest.raises(client.exceptions.ThrottlingException) as err:
            client.get(ct)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert client.get(ct)["imageSetState"] == "ACTIVE"
    assert api.emulator.faults.list() == []                      # spent rules disappear


def test_admin_endpoint(api):
    image_set = api.image_set(CT_STUDY)
    added = _admin(api.emulator, "POST", "/faults",
                   {"faults": [{"operation": "GetImageSet", "action": "error", "times": 5},
                               {"operation": "*", "action": "latency", "seconds": 0}]})
    assert [r["action"] for r in added["faults"]] == ["error", "latency"]
    assert len(_admin(api.emulator, "GET", "/faults")["faults"]) == 2
    first = added["faults"][0]["id"]
    assert len(_admin(api.emulator, "DELETE", f"/faults/{first}")["faults"]) == 1
    assert _admin(api.emulator, "DELETE", "/faults") == {"faults": []}
    with pytest.raises(urllib.error.HTTPError) as err:
        _admin(api.emulator, "POST", "/faults", {"operation": "GetImageSet", "action": "explode"})
    assert err.value.code == 400
    assert _admin(api.emulator, "GET", "/health") == {"status": "ok"}
    assert _admin(api.emulator, "GET", "/behaviours")["behaviours"]["apply_order"] == \
        "removals_first"
    # reset: back to the seeded state.
    api.apply(image_set, DESCRIPTION)
    _admin(api.emulator, "POST", "/reset")
    assert api.latest(image_set) == "1"


def test_admin_complete(make_api):
    api = make_api(update_delay=100)
    image_set = api.image_set(CT_STUDY)
    api.update(image_set, DESCRIPTION)
    assert api.get(image_set)["imageSetState"] == "LOCKED"
    _admin(api.emulator, "POST", "/complete")
    assert api.get(image_set)["imageSetWorkflowStatus"] == "UPDATED"


@pytest.mark.parametrize("suffix, text", [
    (".json", json.dumps({"faults": [{"operation": "GetImageSet", "action": "error",
                                      "code": "AccessDeniedException", "times": 1}]})),
    (".yaml", "- operation: GetImageSet\n  action: error\n  code: AccessDeniedException\n"
              "  times: 1\n"),
])
def test_faults_file(make_api, tmp_path, suffix, text):
    path = tmp_path / f"faults{suffix}"
    path.write_text(text)
    api = make_api(faults_file=str(path))
    with pytest.raises(api.exceptions.AccessDeniedException):
        api.get(api.image_set(CT_STUDY))
    assert api.get(api.image_set(CT_STUDY))["imageSetState"] == "ACTIVE"


def test_bad_faults_file_is_refused(tmp_path):
    from reconciler.emulator.server import OptionsError, ThreadedEmulator

    path = tmp_path / "faults.yaml"
    path.write_text("- operation: GetImageSet\n  action: nonsense\n")
    with pytest.raises(OptionsError, match="fault action"):
        ThreadedEmulator(faults_file=str(path))


# ----------------------------------------------------------------------------- quotas
def test_quotas_off_by_default(api):
    image_set = api.image_set(CT_STUDY)
    for n in range(1, 4):
        api.update(image_set, DESCRIPTION, latest=str(n))
        api.wait(image_set)


def test_update_quota_with_time_scale(make_api):
    # 0.25 TPS x 20 = 5 TPS, burst 1: a second update right away is throttled.
    api = Api(make_api(quotas="aws", time_scale=20).emulator, **NO_RETRY)
    image_set = api.image_set(CT_STUDY)
    api.update(image_set, DESCRIPTION, latest="1")
    with pytest.raises(api.exceptions.ThrottlingException) as err:
        api.update(image_set, DESCRIPTION, latest="2")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert api.get(image_set)["versionId"] == "2"                 # the throttled call wrote nothing
    time.sleep(0.22)
    api.update(image_set, DESCRIPTION, latest="2")


def test_read_quota_and_write_burst(make_api):
    from test_lifecycle import FakeClock

    clock = FakeClock()
    api = Api(make_api(quotas="aws", clock=clock, behaviours={"write_burst": 3}).emulator,
              **NO_RETRY)
    ct = api.image_set(CT_STUDY)
    for _ in range(50):                                            # GetImageSet burst 50
        api.get(ct)
    with pytest.raises(api.exceptions.ThrottlingException):
        api.get(ct)
    clock.now += 0.05                                              # 25 TPS: one token
    api.get(ct)
    image_sets = api.emulator.image_set_ids
    for image_set in image_sets[:3]:                               # write_burst 3
        api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_set)
    with pytest.raises(api.exceptions.ThrottlingException):
        api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_sets[3])
    clock.now += 4                                                 # 0.25 TPS: one token
    api.client.delete_image_set(datastoreId=api.ds, imageSetId=image_sets[3])
    quotas = api.emulator.quotas
    assert quotas.limits("UpdateImageSetMetadata") == (0.25, 3)
    assert quotas.limits("GetImageSetMetadata") == (50, 100)


def test_after_commit_rules_count_only_calls_that_committed(api):
    image_set = api.image_set(CT_STUDY)
    api.emulator.faults.add("UpdateImageSetMetadata", "error_after", imageSetId=image_set,
                            times=1)
    with pytest.raises(api.exceptions.ConflictException, match="not the latest"):
        api.update(image_set, DESCRIPTION, latest="7")              # nothing committed
    assert len(api.emulator.faults.list()) == 1                      # so the rule is still armed
    with pytest.raises(api.exceptions.ConflictException):            # committed, 500, retry 409
        api.update(image_set, DESCRIPTION, latest="1")
    assert api.emulator.faults.list() == []
    assert api.wait(image_set)["versionId"] == "2"
