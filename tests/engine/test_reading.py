"""``reading.resolve_targets`` searching in parallel: the same assignments, in spec order, and
the first failing spec's error whatever finished first (boto3 over HTTP to the emulator)."""

from __future__ import annotations

import pytest

from reconciler.core import errors
from reconciler.engine.reading import resolve_targets
from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings
from reconciler.healthimaging.pacing import Pacer
from reconciler.spec.types import DesiredAttributes, Spec, Target

from .helpers import POS

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def selector_spec(name: str, **selector) -> Spec:
    return Spec(name=name, target=Target(datastore_id=None, selector=selector),
                attributes=DesiredAttributes(), position=POS, digest="0" * 64)


@pytest.fixture
def hi(emulator):
    return BotoHealthImaging(settings=ClientSettings(endpoint_url=emulator.url),
                             pacer=Pacer(enabled=False))


def studies(hi, datastore_id) -> list[str]:
    return sorted({s.dicom_tags["DICOMStudyInstanceUID"]
                   for s in hi.search_image_sets(datastore_id, filters=[])})


def test_parallel_searches_give_the_sequential_assignments_in_spec_order(emulator, hi):
    specs = [selector_spec(f"s{i}", DICOMStudyInstanceUID=uid)
             for i, uid in enumerate(reversed(studies(hi, emulator.datastore_id)))]
    specs.insert(1, Spec(name="explicit", target=Target(datastore_id=None,
                                                        image_set_id="f" * 32),
                         attributes=DesiredAttributes(), position=POS, digest="0" * 64))
    sequential = resolve_targets(specs, hi, emulator.datastore_id)
    parallel = resolve_targets(specs, hi, emulator.datastore_id, parallelism=8)
    assert len(specs) > 3
    assert [(a.spec.name, a.image_set_id) for a in parallel] == \
        [(a.spec.name, a.image_set_id) for a in sequential]
    assert [a.spec.name for a in parallel][:2] == ["s0", "explicit"]


def test_the_first_failing_spec_in_order_is_the_error(emulator, hi):
    specs = [selector_spec("found", DICOMStudyInstanceUID=CT_STUDY)]
    specs += [selector_spec(f"fine{i}", DICOMStudyInstanceUID=CT_STUDY) for i in range(6)]
    specs += [selector_spec("first-empty", DICOMPatientId="NOBODY-1"),
              selector_spec("second-empty", DICOMPatientId="NOBODY-2")]
    with pytest.raises(errors.ReconcilerError, match="first-empty: the selector matched no"):
        resolve_targets(specs, hi, emulator.datastore_id, parallelism=8)
