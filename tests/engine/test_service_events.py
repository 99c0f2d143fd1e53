"""The events watch reads: HealthImaging's envelopes parsed by ids, anything else foreign; and
the --resync-every durations."""

from __future__ import annotations

import json

import pytest

from reconciler.cli.watch import parse_duration
from reconciler.core import errors
from reconciler.emulator.events import ALL_DETAIL_TYPES, EventLog
from reconciler.engine import service_events as se


def test_every_event_the_emulator_builds_is_known_and_parsed():
    assert set(se.KNOWN) == set(ALL_DETAIL_TYPES)
    log = EventLog()
    log.image_set("ds1", "is1", 7, True, "ACTIVE", "UPDATED", 0.0)
    log.job({"datastoreId": "ds1", "jobId": "j1", "jobName": "n", "jobStatus": "COMPLETED",
             "inputS3Uri": "s3://b/in/", "outputS3Uri": "s3://b/out/"}, 0.0)
    updated, completed = (se.parse(json.dumps(e)) for e in log.events())
    assert (updated.detail_type, updated.datastore_id, updated.image_set_id, updated.version) \
        == (se.UPDATED, "ds1", "is1", 7)
    assert (completed.detail_type, completed.job_id) == (se.IMPORT_COMPLETED, "j1")


@pytest.mark.parametrize("body", [
    "", "not json", "[]", json.dumps({"source": "aws.s3", "detail-type": "Object Created",
                                      "detail": {}}),
    json.dumps({"source": "aws.medical-imaging", "detail-type": "Image Set Exploded",
                "detail": {"datastoreId": "d", "imagesetId": "i"}}),
    json.dumps({"source": "aws.medical-imaging", "detail-type": "Image Set Updated",
                "detail": {"datastoreId": "d"}}),               # no image set id
    json.dumps({"source": "aws.medical-imaging", "detail-type": "Image Set Updated",
                "detail": "d"}),
])
def test_foreign_or_broken_messages_are_not_events(body):
    assert se.parse(body) is None


@pytest.mark.parametrize("text,seconds", [("6h", 21600), ("30m", 1800), ("90s", 90), ("90", 90),
                                          ("1d", 86400), ("off", None), ("0", None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_a_usage_error():
    with pytest.raises(errors.UsageError):
        parse_duration("soon")
