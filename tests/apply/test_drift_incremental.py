"""Incremental drift, end to end (the command line, boto3 over HTTP, the emulator): the state
remembers a checkpoint (a *service* time, the records it covered, the image sets not in sync),
and the next drift lists SearchImageSets by updatedAt only down to the checkpoint less the
overlap margin.

The emulator runs on a clock of its own, shifted from this machine's and moved forward by the
tests (``ShiftedClock``): its updatedAt times are then days away from the local clock, which
shows that the checkpoint is the service's time, and updates an hour apart are an hour apart
without anybody waiting. Calls are counted as the emulator answered them (fault rules that only
count). Under a lagging search index (the search_index_lag reading) these tests, about the
steady state, move that clock past the lag after each write (``index_caught_up``): the
listing's blind spot right after a write is tests/apply/test_search_index_lag.py's."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest

from apply_support import (CT_MANAGED, EXAMPLES_DICOM, REPO_ROOT, Project, dicom_update,
                           sample_documents, seed_documents)
from index_clock import catch_up_index
from reconciler.engine.diff import live_values
from reconciler.emulator.server import ThreadedEmulator
from reconciler.states import ImageSetRecord, State, open_backend

DRIFT_SCHEMA = json.loads((REPO_ROOT / "schemas" / "drift.v1.schema.json").read_text())
DAY = 86400.0
SHIFT = 3 * DAY          # the emulator's clock runs three days ahead of this machine's
SPREAD = 60.0            # seconds between two seeded image sets


class ShiftedClock:
    """This machine's time plus a shift the test moves forward; while ``spread`` is set, every
    reading also moves it on (so seeded image sets are ``spread`` seconds apart)."""

    def __init__(self, shift: float = SHIFT, spread: float = 0.0):
        self.shift, self.spread = shift, spread
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.shift += self.spread
            return time.time() + self.shift

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.shift += seconds


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock(spread=SPREAD)


@pytest.fixture
def emu(clock):
    """examples/dicom seeded a minute apart on the shifted clock (replaces conftest's emu)."""
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], update_delay=0.02, clock=clock) as emulator:
        clock.spread = 0.0
        yield emulator


def counters(emu):
    """Fault rules that do nothing but count the calls the emulator answers."""
    return {op: emu.faults.add(op, "latency", seconds=0)
            for op in ("GetImageSet", "GetImageSetMetadata", "SearchImageSets")}


def fired(count) -> dict[str, int]:
    return {op: rule.fired for op, rule in count.items()}


def drift_json(project, *args):
    result = project.run("drift", "--json", *args)
    assert result.exit_code in (0, 2), result.stderr
    doc = result.json
    jsonschema.Draft202012Validator(DRIFT_SCHEMA).validate(doc)
    return result.exit_code, doc, {i["image_set_id"]: i for i in doc["image_sets"]}


def checkpoint(project) -> dict:
    doc = project.check_state_schema()
    (only,) = doc["drift_checkpoints"].values()
    return only


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def newest_updated_at(project) -> datetime:
    r = project.client.search_image_sets(datastoreId=project.datastore_id, searchCriteria={})
    return max(s["updatedAt"] for s in r["imageSetsMetadataSummaries"])


def unmanaged(project, ids) -> list[str]:
    return sorted(set(project.emu.image_set_ids) - set(ids.values()))


# -- the checkpoint ------------------------------------------------------------------------------
def test_drift_records_a_service_time_checkpoint_and_the_next_check_costs_one_call(
        project, applied, index_caught_up):
    index_caught_up()
    before = project.state()
    assert "drift_checkpoints" not in before          # apply alone records none
    code, doc, items = drift_json(project)
    assert code == 0 and doc["summary"]["in-sync"] == 3
    assert doc["check"]["incremental"] is False
    assert doc["check"]["datastores"][0]["why_full"] == "no checkpoint yet"

    after = project.check_state_schema()
    assert after["serial"] == before["serial"] + 1     # one write, under the lock
    assert after["specs"] == before["specs"]            # records (and their serials) untouched
    cp = checkpoint(project)
    assert cp["records_serial"] == after["serial"] and cp["unsettled"] == []
    # The checkpoint is the newest updatedAt the service listed: the emulator's clock, three
    # days ahead of this machine's, not this machine's.
    assert parse(cp["through"]) == newest_updated_at(project)
    assert parse(cp["through"]) > datetime.now(timezone.utc) + timedelta(days=2)
    assert parse(cp["full_check_at"]) <= datetime.now(timezone.utc)

    count = counters(project.emu)
    code, doc, items = drift_json(project)
    assert code == 0 and doc["summary"]["in-sync"] == 3
    check = doc["check"]
    assert check["incremental"] is True
    assert parse(check["since"]) == parse(cp["through"]) - timedelta(seconds=300)
    assert "deleted" in check["cannot_see"]
    assert fired(count) == {"SearchImageSets": 1, "GetImageSet": 0, "GetImageSetMetadata": 0}
    text = project.run("drift")
    assert text.exit_code == 0
    assert "Incremental check: listed the image sets updated since" in text.stdout


def test_an_out_of_band_change_is_found_and_stays_reported_until_apply_fixes_it(
        project, applied, clock, index_caught_up):
    ct = applied["ct-small"]
    other = unmanaged(project, applied)[0]
    drift_json(project)                                     # the checkpoint
    clock.advance(3600)
    project.write_oob(ct, updatable=dicom_update((CT_MANAGED, "INTRUDER^EVE")))
    index_caught_up()

    count = counters(project.emu)
    code, doc, items = drift_json(project)
    assert code == 2 and doc["check"]["incremental"] is True
    assert items[ct]["status"] == "drifted"
    assert [a["path"] for a in items[ct]["attributes"]] == [CT_MANAGED.path]
    assert {items[i]["status"] for i in (applied["nm-bone"], applied["sc-deid"])} == {"in-sync"}
    # Metadata read for the changed image set only.
    assert fired(count) == {"SearchImageSets": 1, "GetImageSet": 1, "GetImageSetMetadata": 1}
    assert checkpoint(project)["unsettled"] == [ct]

    # An hour later an image set we do not manage changes: the checkpoint moves past the
    # drifted one, which the listing no longer reaches. It is checked anyway: unsettled.
    clock.advance(3600)
    project.write_oob(other, updatable={"Study": {"DICOM": {"StudyDescription": "ELSEWHERE"}}})
    index_caught_up()
    assert drift_json(project)[0] == 2                    # the checkpoint moves past ct's update
    count = counters(project.emu)
    code, doc, items = drift_json(project)
    assert code == 2 and items[ct]["status"] == "drifted"
    assert fired(count) == {"SearchImageSets": 1, "GetImageSet": 1, "GetImageSetMetadata": 1}
    assert parse(doc["check"]["since"]) > project.latest(ct)["updatedAt"]
    assert checkpoint(project)["unsettled"] == [ct]

    repaired = project.run("apply", "--auto-approve")
    assert repaired.exit_code == 0, repaired.stderr
    index_caught_up()
    code, doc, items = drift_json(project)
    assert code == 0 and items[ct]["status"] == "in-sync"
    assert items[ct]["live_version"] == "4"            # listed at the version apply made
    assert checkpoint(project)["unsettled"] == []


# -- what an incremental check cannot see, and the full check ---------------------------------
def test_a_deleted_image_set_is_found_by_the_full_check_not_by_the_incremental_one(
        project, applied):
    nm = applied["nm-bone"]
    drift_json(project)
    project.delete(nm)
    # The documented blind spot: the search no longer lists a deleted image set, and the
    # checkpoint found it in sync, so an incremental check reports it in sync, unread.
    code, doc, items = drift_json(project)
    assert code == 0
    assert (items[nm]["status"], items[nm]["live_version"]) == ("in-sync", None)
    assert doc["check"]["from_checkpoint"] == 1
    assert "deleted" in doc["check"]["cannot_see"]

    code, doc, items = drift_json(project, "--full")
    assert code == 2 and items[nm]["status"] == "missing"
    assert doc["check"]["incremental"] is False and doc["check"]["cannot_see"] is None
    assert doc["check"]["datastores"][0]["why_full"] == "full check requested"
    assert checkpoint(project)["unsettled"] == [nm]
    code, doc, items = drift_json(project)               # incremental again: still missing
    assert code == 2 and doc["check"]["incremental"] is True
    assert items[nm]["status"] == "missing"


def test_a_full_check_is_due_when_the_last_one_is_older_than_the_configured_age(
        project, applied):
    sc = applied["sc-deid"]
    drift_json(project)
    project.delete(sc)
    code, doc, items = drift_json(project)
    assert items[sc]["status"] == "in-sync"               # incremental: not seen
    # The last full check a day and a minute ago (this machine's clock): the next is full.
    state = project.state()
    (ds,) = state["drift_checkpoints"]
    stamp = (datetime.now(timezone.utc) - timedelta(hours=24, minutes=1)).isoformat(
        timespec="seconds")
    state["drift_checkpoints"][ds]["full_check_at"] = stamp
    project.state_path.write_text(json.dumps(state))
    code, doc, items = drift_json(project)
    assert code == 2 and items[sc]["status"] == "missing"
    assert doc["check"]["incremental"] is False
    assert "fullCheckAfterHours" in doc["check"]["datastores"][0]["why_full"]
    assert parse(checkpoint(project)["full_check_at"]) > parse(stamp)
    # fullCheckAfterHours: 0 makes every check a full one.
    project.write_config({**project.config, "drift": {"fullCheckAfterHours": 0}})
    code, doc, items = drift_json(project)
    assert doc["check"]["incremental"] is False


def test_a_record_written_after_the_checkpoint_is_checked_on_its_own(project, applied):
    """The checkpoint covers the records it checked (by serial): one recorded later — here for
    an image set not updated since long before the checkpoint, so never listed — is read."""
    other = unmanaged(project, applied)[0]
    project.write_config({**project.config, "drift": {"overlapSeconds": 0}})
    drift_json(project)
    backend = open_backend({"backend": "local", "path": str(project.state_path)}, project.root)
    with backend.lock("test"):
        state = backend.read()
        state.put("late", ImageSetRecord(project.datastore_id, other, "1", "1", "0" * 64, {}))
        backend.write(state)
    # (the spec it is recorded for: a record whose spec is gone would be orphaned, not read)
    project.write_spec("late", {"Study": {"StudyDescription": "LATE"}}, image_set_id=other)
    project.delete(other)
    count = counters(project.emu)
    code, doc, items = drift_json(project)
    assert code == 2 and items[other]["status"] == "missing"
    assert doc["check"]["incremental"] is True and doc["check"]["from_checkpoint"] >= 1
    assert fired(count)["GetImageSet"] == 1


@pytest.mark.parametrize("overlap, found", [(None, True), (0, False)])
def test_the_overlap_margin_catches_an_update_that_lands_behind_the_checkpoint(
        project, applied, clock, index_caught_up, overlap, found):
    """An update that stays LOCKED across a drift check and then completes with an updatedAt
    older than the newest one that check listed (an update in flight, a lagging index, clock
    skew): the default margin (300 s) lists it; with none it is missed until a full check."""
    if overlap is not None:
        project.write_config({**project.config, "drift": {"overlapSeconds": overlap}})
    ct, other = applied["ct-small"], unmanaged(project, applied)[0]
    drift_json(project)
    project.emu.faults.add("UpdateImageSetMetadata", "lock", imageSetId=ct, polls=1, times=1)
    project.write_oob(ct, updatable=dicom_update((CT_MANAGED, "LATE^LARRY")), wait=False)
    clock.advance(60)
    project.write_oob(other, updatable={"Study": {"DICOM": {"StudyDescription": "ELSEWHERE"}}})
    index_caught_up()
    code, doc, items = drift_json(project)               # ct's update is still LOCKED
    assert items[ct]["status"] == "in-sync"
    done = project.wait_unlocked(ct)                     # now it lands, stamped a minute back
    assert done["updatedAt"] < newest_updated_at(project)
    code, doc, items = drift_json(project)
    assert items[ct]["status"] == ("drifted" if found else "in-sync")
    if not found:
        code, doc, items = drift_json(project, "--full")
        assert items[ct]["status"] == "drifted"


# -- a fleet ----------------------------------------------------------------------------------
def test_an_untouched_fleet_after_the_checkpoint_costs_one_call(tmp_path):
    """120 recorded image sets, seeded a minute apart: the first drift lists them all (3
    pages), the next costs one SearchImageSets call; a change made since costs one GetImageSet
    and one metadata read more; --full lists everything again."""
    clock = ShiftedClock(spread=SPREAD)
    docs = sample_documents(120)
    with ThreadedEmulator(seeds=seed_documents(tmp_path / "seeds", docs), update_delay=0.02,
                          clock=clock) as emu:
        clock.spread = 0.0
        project = Project(tmp_path / "fleet", emu, example_specs=False)
        # The spec the records are filed under (records of a spec that is gone are orphaned,
        # and not read); drift does not search its selector.
        project.write_spec("fleet", {"Study": {"StudyDescription": "PELVIS"}},
                           selector={"DICOMPatientId": "MRN-7731-0000"})
        backend = open_backend({"backend": "local", "path": str(project.state_path)},
                               project.root)
        state = State.new()
        paths = ["Study.StudyDescription", "Patient.PatientID"]
        for image_set_id in emu.image_set_ids:
            doc = project.metadata(image_set_id)
            state.put("fleet", ImageSetRecord(emu.datastore_id, image_set_id, "1", "1", "0" * 64,
                                              state.hash_values(live_values(paths, doc),
                                                                image_set_id)))
        backend.write(state)

        count = counters(emu)
        code, doc, items = drift_json(project)
        assert code == 0 and doc["summary"]["in-sync"] == 120
        assert fired(count) == {"SearchImageSets": 3, "GetImageSet": 0, "GetImageSetMetadata": 0}

        count = counters(emu)
        code, doc, items = drift_json(project)
        assert code == 0 and doc["summary"]["in-sync"] == 120
        assert sum(fired(count).values()) <= 2
        assert fired(count) == {"SearchImageSets": 1, "GetImageSet": 0, "GetImageSetMetadata": 0}
        assert doc["check"]["datastores"][0]["listed_pages"] == 1
        # Only the image sets seeded within the 300 s margin of the newest are listed again.
        assert doc["check"]["from_checkpoint"] >= 110

        clock.advance(600)
        touched = emu.image_set_ids[7]
        project.write_oob(touched, updatable={"Study": {"DICOM": {"StudyDescription": "X"}}})
        catch_up_index(clock)
        count = counters(emu)
        code, doc, items = drift_json(project)
        assert code == 2 and doc["summary"]["drifted"] == 1
        assert items[touched]["status"] == "drifted"
        assert fired(count) == {"SearchImageSets": 1, "GetImageSet": 1, "GetImageSetMetadata": 1}

        count = counters(emu)
        code, doc, items = drift_json(project, "--full")
        assert code == 2 and doc["summary"] == {"in-sync": 119, "drifted": 1,
                                                "changed-elsewhere": 0, "missing": 0,
                                                "not-applied": 0}
        assert fired(count) == {"SearchImageSets": 3, "GetImageSet": 1, "GetImageSetMetadata": 1}
        assert doc["check"]["from_checkpoint"] == 0


# -- the state ------------------------------------------------------------------------------
def test_an_old_state_without_a_checkpoint_loads_and_gets_one(project, applied):
    """A state written before incremental drift (no drift_checkpoints): read, checked in full,
    written back with a checkpoint; apply keeps the checkpoint when it saves."""
    old = project.state()
    assert "drift_checkpoints" not in old
    State.from_json(json.dumps(old))
    code, doc, items = drift_json(project)
    assert doc["check"]["datastores"][0]["why_full"] == "no checkpoint yet"
    cp = checkpoint(project)
    project.write_spec("ct-small", {"Study": {"StudyDescription": "CT CHEST REVIEWED"}},
                       image_set_id=applied["ct-small"])
    applied_again = project.run("apply", "--auto-approve")
    assert applied_again.exit_code == 0, applied_again.stderr
    assert checkpoint(project) == cp                      # kept by apply's saves
    record = project.record("ct-small", applied["ct-small"])
    assert record["serial"] > cp["records_serial"]        # so drift checks it on its own


def test_drift_waits_for_the_state_lock_like_apply(project, applied):
    drift_json(project)
    backend = open_backend({"backend": "local", "path": str(project.state_path)}, project.root)
    with backend.lock("apply"):
        busy = project.run("drift", "--lock-timeout", "0")
        assert busy.exit_code == 1 and "is locked by" in busy.stderr
    assert project.run("drift", "--lock-timeout", "5").exit_code == 0


def test_without_the_right_to_lock_the_state_drift_checks_and_saves_nothing(
        project, applied, monkeypatch):
    """A read-only role (s3:GetObject only) or a read-only directory: the lock cannot be taken
    at all. drift still checks (from the saved checkpoint, if any), says so, and writes
    nothing; a lock *held* by another run stays an error, as for apply."""
    from reconciler.core.errors import LockError
    from reconciler.states.local import LocalBackend

    drift_json(project)
    before = project.state_path.read_bytes()

    def denied(self, info, name_holder):
        raise LockError(f"cannot lock state {self.describe()}: AccessDenied")

    monkeypatch.setattr(LocalBackend, "_try_lock", denied)
    project.write_oob(applied["ct-small"], updatable=dicom_update((CT_MANAGED, "X^Y")))
    result = project.run("drift", "--json")
    assert result.exit_code == 2
    assert "drift checked without saving its checkpoint" in result.stderr
    report = result.json
    assert report["check"]["incremental"] is True
    assert {i["image_set_id"]: i["status"] for i in report["image_sets"]}[applied["ct-small"]] \
        == "drifted"
    assert project.state_path.read_bytes() == before


def test_the_checkpoint_survives_the_s3_backend(project, index_caught_up):
    import boto3
    from moto_server import moto_server

    with moto_server() as url:
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=url)
        s3.create_bucket(Bucket="drift-state")
        project.write_config({**project.config, "state": {
            "backend": "s3", "bucket": "drift-state", "key": "team/state.json",
            "region": "us-east-1", "endpointUrl": url}})
        done = project.run("apply", "--auto-approve")
        assert done.exit_code == 0, done.stderr
        index_caught_up()
        state = json.loads(s3.get_object(Bucket="drift-state", Key="team/state.json")["Body"].read())
        assert "drift_checkpoints" not in state
        drift_json(project)
        state = json.loads(s3.get_object(Bucket="drift-state", Key="team/state.json")["Body"].read())
        assert set(state["drift_checkpoints"]) == {project.datastore_id}
        count = counters(project.emu)
        code, doc, items = drift_json(project)
        assert code == 0 and doc["check"]["incremental"] is True
        assert fired(count) == {"SearchImageSets": 1, "GetImageSet": 0, "GetImageSetMetadata": 0}
