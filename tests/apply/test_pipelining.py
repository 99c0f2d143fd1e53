"""Apply pipelining: an image set waiting for its asynchronous update never holds back the
updates of the others (issue 5). The emulator keeps one accepted write LOCKED for many polls;
the other image sets must be written, completed, verified and recorded while it still is."""

import pytest

from reconciler.dicom.redact import Redactor
from reconciler.engine.applier import ApplyOptions
from reconciler.engine.operations import apply_plan, report_failed
from reconciler.engine.planner import PlanOptions, make_plan
from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings
from reconciler.healthimaging.pacing import Pacer
from reconciler.spec.config import load_config
from reconciler.spec.loader import load_specs
from reconciler.states import State, open_backend

SLOW_POLLS = 12


def _apply_with_one_slow_update(project, ids, in_flight):
    slow = ids["ct-small"]
    project.emu.faults.add("UpdateImageSetMetadata", "lock", imageSetId=slow,
                           polls=SLOW_POLLS, times=1)
    config = load_config(str(project.config_path))
    specs = load_specs([], config)
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=project.url),
                           pacer=Pacer(enabled=False))
    plan = make_plan(specs, hi, Redactor(False), default_datastore=config.datastore_id,
                     options=PlanOptions(poll_interval=0.01))
    finished: list[tuple[str, str]] = []     # (spec, state of the slow image set right then)

    def on_result(item):
        finished.append((item["spec"], project.latest(slow)["imageSetState"]))

    report = apply_plan(plan, specs, hi, open_backend(config.state, config.root), State.new(),
                        ApplyOptions(parallelism=1, in_flight=in_flight, poll_interval=0.01,
                                     backoff_base=0.01), saved=True, on_result=on_result)
    assert not report_failed(report), report
    assert report["summary"]["applied"] == 3
    return finished


def test_other_image_sets_finish_while_one_update_is_still_locked(project, ids):
    finished = _apply_with_one_slow_update(project, ids, in_flight=32)
    others = [state for spec, state in finished if spec != "ct-small"]
    assert others == ["LOCKED", "LOCKED"]          # done while the slow one was in flight
    assert finished[-1][0] == "ct-small"


@pytest.mark.parametrize("in_flight", [1], ids=["one-at-a-time"])
def test_without_pipelining_the_slow_update_holds_the_others_back(project, ids, in_flight):
    """The control: one image set in flight at a time, and the plan's order (the slow one
    first) holds back the rest. This is what the test above would see if apply did not
    pipeline."""
    finished = _apply_with_one_slow_update(project, ids, in_flight)
    assert finished[0][0] == "ct-small"
    assert [state for _, state in finished[1:]] == ["ACTIVE", "ACTIVE"]
