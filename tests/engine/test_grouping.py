"""Study groups as pure functions: which entries of a plan become one includeStudyImageSets
request, the plan document that holds a group (schema, checksum, redaction, summary), its
rendering, and the checks apply makes of every member before anything is sent."""

from __future__ import annotations

import copy
import json

import pytest

from reconciler import grouping, plans, runs
from reconciler.applier import STALE, Applier, ApplyOptions
from reconciler.diff import diff
from reconciler.errors import PlanFileError
from reconciler.markdown import render_plan_markdown
from reconciler.planner import Assignment, plan_entry
from reconciler.redact import Redactor
from reconciler.render import render_plan
from reconciler.service import ImageSet, ImageSetSummary
from reconciler.states import ImageSetRecord, State

from .helpers import spec

DS = "d" * 32
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
IDS = ["a" * 32, "b" * 32, "c" * 32]
NEW_NAME = "DOE^GROUPED"


def _metadata(name="SMITH^JOHN", description="CT", series="1.2.3.4"):
    return {"SchemaVersion": "1.1",
            "Patient": {"DICOM": {"PatientName": name}},
            "Study": {"DICOM": {"StudyInstanceUID": STUDY_UID, "StudyDescription": description},
                      "Series": {series: {"DICOM": {"SeriesInstanceUID": series,
                                                    "SeriesDescription": "AX"},
                                          "Instances": {}}}}}


def _entry(image_set_id, redactor=None, metadata=None, name="s", **levels):
    levels = levels or {"patient": {"PatientName": NEW_NAME}}
    s = spec(name=name, image_set_id=image_set_id, datastore_id=DS, **levels)
    changes = diff(s.attributes, metadata or _metadata(), image_set_id)
    return plan_entry(Assignment(s, DS, image_set_id), "1", changes, redactor or Redactor(False))


def _index(ids=IDS, primary=True, study=STUDY_UID):
    index = grouping.StudyIndex()
    for image_set_id in ids:
        index.note(ImageSet(DS, image_set_id, "1", "ACTIVE", is_primary=primary),
                   _metadata() if study == STUDY_UID else
                   {"Study": {"DICOM": {"StudyInstanceUID": study}}})
    return index


class FakeHealthImaging:
    """The study's primary image sets for SearchImageSets; every call is counted."""

    def __init__(self, primaries=IDS, others=()):
        self.summaries = ([ImageSetSummary(i, "1", is_primary=True) for i in primaries]
                          + [ImageSetSummary(i, "1", is_primary=False) for i in others])
        self.searches: list = []
        self.updates = 0

    def search_image_sets(self, datastore_id, filters=None, sort=None):
        self.searches.append(filters)
        return iter(self.summaries)

    def update_metadata(self, *args, **kwargs):
        self.updates += 1
        raise AssertionError("nothing may be written")


def test_every_primary_image_set_with_the_same_change_is_one_group():
    entries = [_entry(i) for i in reversed(IDS)]
    hi = FakeHealthImaging(others=["e" * 32])        # a non-primary one does not count
    single, groups = grouping.group_studies(entries, _index(), hi)
    assert single == []
    (group,) = groups
    assert hi.searches == [grouping.study_filter(STUDY_UID)]
    assert group["leader"] == IDS[0]
    assert [m["image_set_id"] for m in group["members"]] == IDS
    assert set(group["members"][0]) == set(grouping.MEMBER_KEYS)
    assert group["study"].startswith("study-") and STUDY_UID not in json.dumps(group)
    assert group["requests"] == [dict(entries[0]["requests"][0], includeStudyImageSets=True)]
    assert group["changes"] == entries[0]["changes"]


@pytest.mark.parametrize("case", ["one not targeted", "changes differ", "series change",
                                  "error entry", "two entries", "not primary", "force",
                                  "one candidate"])
def test_no_group(case):
    entries = [_entry(i) for i in IDS]
    hi = FakeHealthImaging()
    index = _index()
    if case == "one not targeted":
        hi = FakeHealthImaging(primaries=[*IDS, "f" * 32])
    elif case == "changes differ":
        entries[2] = _entry(IDS[2], patient={"PatientName": "OTHER^NAME"})
    elif case == "series change":
        entries = [_entry(i, patient={"PatientName": NEW_NAME},
                          series={"1.2.3.4": {"SeriesDescription": "COR"}}) for i in IDS]
    elif case == "error entry":
        s = spec(image_set_id=IDS[2], datastore_id=DS, patient={"PatientName": NEW_NAME})
        entries[2] = plan_entry(Assignment(s, DS, IDS[2]), "1", [], Redactor(False),
                                error="broken")
    elif case == "two entries":
        entries.append(_entry(IDS[2], name="other", study={"StudyDescription": "X"}))
    elif case == "not primary":
        index = _index(primary=False)
    elif case == "force":
        entries = [_entry(i) for i in IDS]
        for e in entries:
            e["force"] = True
    elif case == "one candidate":
        entries = entries[:1]
    single, groups = grouping.group_studies(entries, index, hi)
    assert groups == [] and single == entries
    if case in ("series change", "error entry", "two entries", "not primary", "force",
                "one candidate", "changes differ"):
        assert hi.searches == []    # decided without a call


def test_studies_of_other_uids_are_grouped_apart():
    index = _index(IDS[:2])
    index.note(ImageSet(DS, IDS[2], "1", "ACTIVE", is_primary=True),
               {"Study": {"DICOM": {"StudyInstanceUID": "1.2.3.999"}}})
    candidates = grouping.candidate_studies([_entry(i) for i in IDS], index)
    assert list(candidates) == [(DS, STUDY_UID)]
    assert [e["image_set_id"] for e in candidates[(DS, STUDY_UID)]] == IDS[:2]


def test_shared_change_compares_real_values_not_redacted_markers():
    a = _entry(IDS[0], Redactor(True, salt=b"x"))
    b = _entry(IDS[1], Redactor(True, salt=b"x"), metadata=_metadata(name="OTHER^BEFORE"))
    assert grouping.shared_change(a) is not None
    assert grouping.shared_change(a) != grouping.shared_change(b)


def _grouped_plan(redactor=None, state_serial=None):
    entries = [_entry(i, redactor) for i in IDS]
    for e in entries:
        e["state_serial"] = state_serial
    single, groups = grouping.group_studies(entries, _index(), FakeHealthImaging())
    lone = _entry("e" * 32, redactor, study={"StudyDescription": "LONE"})
    return plans.new_plan([*single, lone], redacted=bool(redactor and redactor.enabled),
                          groups=groups)


def test_a_grouped_plan_is_valid_and_its_summary_counts_image_sets_and_requests():
    doc = plans.validate(_grouped_plan())
    assert doc["summary"] == {"update": 4, "unchanged": 0, "error": 0,
                              "attributes_changed": 4, "requests": 2}
    assert [e["image_set_id"] for e in plans.per_image_set(doc)] == ["e" * 32, *IDS]
    members = [e for e in plans.per_image_set(doc) if "group" in e]
    assert [len(e["requests"]) for e in members] == [1, 0, 0]


def test_an_edited_group_is_refused():
    doc = _grouped_plan()
    edited = copy.deepcopy(doc)
    edited["groups"][0]["leader"] = IDS[1]
    edited["checksum"] = plans.checksum(edited)
    with pytest.raises(PlanFileError, match="leader"):
        plans.validate(edited)
    edited = copy.deepcopy(doc)
    edited["groups"][0]["requests"][0]["includeStudyImageSets"] = False
    edited["checksum"] = plans.checksum(edited)
    with pytest.raises(PlanFileError, match="groups"):
        plans.validate(edited)
    edited = copy.deepcopy(doc)
    edited["groups"][0]["members"][1]["version_id"] = "2"
    with pytest.raises(PlanFileError, match="checksum"):
        plans.validate(edited)


def test_the_printed_redacted_plan_holds_no_value_and_cannot_be_applied():
    doc = _grouped_plan(Redactor(True))
    shown = plans.validate(plans.public_view(doc))
    assert NEW_NAME in json.dumps(doc)                  # the saved plan keeps its payload
    assert NEW_NAME not in json.dumps(shown) and "SMITH" not in json.dumps(shown)
    assert all(m["before_digest"] is None for m in shown["groups"][0]["members"])
    assert not plans.is_applicable(shown)
    text, markdown = render_plan(shown), render_plan_markdown(shown)
    for out in (text, markdown):
        assert NEW_NAME not in out and "SMITH" not in out and STUDY_UID not in out
    unredacted = plans.redact_values(_grouped_plan(), Redactor(True).show)
    assert NEW_NAME not in json.dumps(unredacted["groups"][0]["changes"])


def test_the_group_renders_as_one_item_naming_its_members():
    doc = _grouped_plan()
    text = render_plan(doc)
    assert text.count("~ study group study-") == 1
    assert "study group study-" in text and "(3 primary image sets)" in text
    assert all(f"image set {i} (version 1)" in text for i in IDS)
    assert f"1 request to image set {IDS[0]} with includeStudyImageSets=true" in text
    assert "Plan: 4 image sets to update in 2 requests (1 study group), 0 unchanged" in text
    markdown = render_plan_markdown(doc)
    assert "| s | study group study-" in markdown and "update (1 request)" in markdown


def test_stale_entries_cover_every_member():
    doc = _grouped_plan()
    state = State.new()
    s = spec(name="s", image_set_id=IDS[2], datastore_id=DS)
    state.put("s", ImageSetRecord(datastore_id=DS, image_set_id=IDS[2], version_before="1",
                                  version_after="1", spec_digest=s.digest, hashes={},
                                  last_operation="apply"))
    stale = runs.stale_entries(doc, state, {"s": s})
    assert ("s", IDS[2]) in stale and ("s", IDS[1]) not in stale


def test_a_stale_member_stops_the_whole_group_before_any_call():
    doc = _grouped_plan()
    s = spec(name="s", image_set_id=IDS[0], datastore_id=DS)
    hi = FakeHealthImaging()
    outcomes = Applier(hi, ApplyOptions()).apply_group(
        doc["groups"][0], {"s": s}, skip={("s", IDS[1]): "the state changed"})
    assert [o.status for o in outcomes] == [STALE] * 3
    assert [o.image_set_id for o in outcomes] == IDS
    assert all(IDS[1] in o.reason for o in outcomes)
    assert hi.updates == 0 and hi.searches == []


def test_a_study_listed_by_its_selector_is_not_searched_again():
    entries = [_entry(i) for i in IDS]
    hi = FakeHealthImaging()
    s = spec(name="s", image_set_id=None, datastore_id=DS)
    s.target = type(s.target)(datastore_id=DS, selector={"DICOMStudyInstanceUID": STUDY_UID})
    listed = grouping.listed_studies(
        [Assignment(s, DS, i, ImageSetSummary(i, "1", is_primary=True)) for i in IDS]
        + [Assignment(s, DS, "e" * 32, ImageSetSummary("e" * 32, "1", is_primary=False))])
    assert listed == {(DS, STUDY_UID): set(IDS)}
    single, groups = grouping.group_studies(entries, _index(), hi, listed)
    assert len(groups) == 1 and hi.searches == []
    listed[(DS, STUDY_UID)].add("f" * 32)          # the listing shows one more primary
    assert grouping.group_studies(entries, _index(), hi, listed)[1] == []
