"""The faults tests/apply does not already cover: client timeouts around a write that lands
anyway, and a client paced at ten times the quota the service enforces. Each case checks the
end state of the metadata, the versions created, the state and the report."""

import shutil
from pathlib import Path

import pytest

from reconciler.dicom.redact import Redactor
from reconciler.emulator.server import ThreadedEmulator
from reconciler.engine.applier import ApplyOptions
from reconciler.engine.diff import diff
from reconciler.engine.operations import apply_plan, report_failed
from reconciler.engine.planner import PlanOptions, make_plan
from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings
from reconciler.healthimaging.pacing import Pacer
from reconciler.spec.config import load_config
from reconciler.spec.loader import load_specs
from reconciler.states import State, open_backend

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DICOM = REPO_ROOT / "examples" / "dicom"


def _project(tmp_path, emu):
    shutil.copytree(REPO_ROOT / "examples" / "specs", tmp_path / "specs")
    (tmp_path / "reconciler.yaml").write_text(f"datastoreId: {emu.datastore_id}\nspecs: [specs]\n")
    config = load_config(str(tmp_path / "reconciler.yaml"))
    return config, load_specs([], config)


def _run(hi, config, specs, **apply_options):
    plan = make_plan(specs, hi, Redactor(False), default_datastore=config.datastore_id,
                     options=PlanOptions(poll_interval=0.01))
    backend = open_backend(config.state, config.root)
    state = State.new()
    options = ApplyOptions(poll_interval=0.01, backoff_base=0.01, **apply_options)
    return apply_plan(plan, specs, hi, backend, state, options, saved=True), backend


def _converged(hi, emu, specs):
    for spec in specs:
        [summary] = hi.search_image_sets(emu.datastore_id, filters=[
            {"operator": "EQUAL", "values": [spec.target.selector]}])
        image_set = hi.get_image_set(emu.datastore_id, summary.image_set_id)
        doc = hi.get_metadata(emu.datastore_id, summary.image_set_id, image_set.version_id)
        assert diff(spec.attributes, doc) == [], spec.name


def test_client_timeouts_while_the_write_lands_behind_them(tmp_path):
    """The service takes longer than the client's read timeout: botocore gives up on the
    first attempt and retries, the write had landed, the retry meets a 409. apply re-reads,
    finds the desired state, and reports success with exactly one new version each."""
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)]) as emu:
        config, specs = _project(tmp_path, emu)
        slow = emu.faults.add("UpdateImageSetMetadata", "latency", seconds=1.5, times=3)
        hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emu.url, read_timeout=0.5,
                                                       connect_timeout=0.5),
                               pacer=Pacer(enabled=False))
        report, backend = _run(hi, config, specs)
        assert slow.fired == 3            # three requests outlived the client's timeout
        assert not report_failed(report), report
        assert report["summary"]["applied"] == 3
        assert {i["writes"] for i in report["image_sets"]} == {1}
        _converged(hi, emu, specs)
        for image_set_id in emu.image_set_ids:
            versions = hi.list_versions(emu.datastore_id, image_set_id)
            managed = {i["image_set_id"] for i in report["image_sets"]}
            assert len(versions) == (2 if image_set_id in managed else 1)
        state = backend.read()
        assert {r.version_after for _, r in state.records()} == {"2"}


def test_a_client_paced_at_ten_times_the_enforced_quota_still_converges(tmp_path):
    """The emulator enforces the published quotas, sped up 40-fold (UpdateImageSetMetadata
    10/s, burst 1); the client is told the account allows 100/s. The service throttles; botocore
    and apply back off, the pacer halves its rate, and every image set is applied once, with no
    throttling error surfaced in the report."""
    with ThreadedEmulator(seeds=[str(EXAMPLES_DICOM)], quotas="aws", time_scale=40) as emu:
        config, specs = _project(tmp_path, emu)
        pacer = Pacer(rates={"UpdateImageSetMetadata": 100, "GetImageSet": 10_000,
                             "GetImageSetMetadata": 20_000, "SearchImageSets": 10_000})
        hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=emu.url), pacer=pacer)
        report, _ = _run(hi, config, specs, parallelism=3)
        assert pacer.throttle_count() > 0        # the service did throttle us
        assert pacer.rate("UpdateImageSetMetadata") < 100   # and the pacer slowed down
        assert not report_failed(report), report
        assert report["summary"]["applied"] == 3
        assert all(i["writes"] == 1 for i in report["image_sets"])
        assert all("Throttling" not in (i["reason"] or "") for i in report["image_sets"])
        _converged(hi, emu, specs)
