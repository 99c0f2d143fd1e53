"""Study updates, planned against a small in-memory HealthImaging: which changes to primary
image sets become one includeStudyImageSets request, who the members and peers are, what is
refused before any write, the plan document that holds an update (schema, checksum,
redaction, summary), its rendering, and the checks apply makes before anything is sent."""

from __future__ import annotations

import copy
import json

import pytest

from reconciler.core.canonical import json_pieces
from reconciler.core.errors import PlanFileError
from reconciler.dicom.redact import Redactor
from reconciler.documents import plans
from reconciler.documents.markdown import render_plan_markdown
from reconciler.documents.render import render_plan
from reconciler.engine import operations
from reconciler.engine.applier import Applier, ApplyOptions
from reconciler.engine.outcomes import STALE
from reconciler.engine.payloads import Request
from reconciler.engine.planner import Assignment, PlanOptions, make_plan
from reconciler.engine.study_facts import StudyIndex
from reconciler.engine.study_planner import StudyPlanner
from reconciler.engine.study_updates import listed_studies, study_filter
from reconciler.healthimaging.api import ImageSet, ImageSetSummary
from reconciler.spec.config import PrimaryPolicy
from reconciler.spec.types import Target
from reconciler.states import ImageSetRecord, State

from .helpers import spec

DS = "d" * 32
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
IDS = ["a" * 32, "b" * 32, "c" * 32]
NEW_NAME = "DOE^GROUPED"
SERIES = "1.2.3.4"
SOP = "1.2.3.4.5"


def _metadata(name="SMITH^JOHN", description="CT", series=SERIES, study=STUDY_UID):
    return {"SchemaVersion": "1.1",
            "Patient": {"DICOM": {"PatientName": name, "PatientSex": "O"}},
            "Study": {"DICOM": {"StudyInstanceUID": study, "StudyDescription": description},
                      "Series": {series: {"DICOM": {"SeriesInstanceUID": series,
                                                    "SeriesDescription": "AX"},
                                          "Instances": {SOP + series[-1]: {"DICOM": {
                                              "SOPInstanceUID": SOP + series[-1]}}}}}}}


class FakeHealthImaging:
    """Image sets in memory (all version 1); reads and searches are counted, writes refused."""

    def __init__(self, documents=None, primary=True, others=()):
        self.documents = documents or {i: _metadata(series=f"1.2.3.{n}")
                                       for n, i in enumerate(IDS)}
        self.primary = {i: primary for i in self.documents}
        for other in others:
            self.documents[other] = _metadata(series="1.2.3.9")
            self.primary[other] = False
        self.searches: list = []
        self.reads: list = []
        self.updates = 0

    def get_image_set(self, datastore_id, image_set_id, version_id=None):
        return ImageSet(DS, image_set_id, "1", "ACTIVE", is_primary=self.primary[image_set_id])

    def get_metadata(self, datastore_id, image_set_id, version_id=None):
        self.reads.append(image_set_id)
        return copy.deepcopy(self.documents[image_set_id])

    def search_image_sets(self, datastore_id, filters=None, sort=None):
        self.searches.append(filters)
        return iter([ImageSetSummary(i, "1", is_primary=self.primary[i])
                     for i in self.documents])

    def update_metadata(self, *args, **kwargs):
        self.updates += 1
        raise AssertionError("nothing may be written")


def _spec(image_set_id, name="s", **levels):
    return spec(name=name, image_set_id=image_set_id, datastore_id=DS,
                **(levels or {"patient": {"PatientName": NEW_NAME}}))


def _plan(specs, hi=None, policy=None, redactor=None, state_serial=None):
    hi = hi or FakeHealthImaging()
    return make_plan(specs, hi, redactor or Redactor(False), default_datastore=DS,
                     options=PlanOptions(primary=policy or PrimaryPolicy(), progress=False),
                     state_serial=state_serial), hi


def test_a_patient_change_to_primary_image_sets_is_one_study_update_with_every_peer():
    doc, hi = _plan([_spec(IDS[1], name="one"), _spec(IDS[2], name="two")],
                    FakeHealthImaging(others=["e" * 32]))
    assert doc["image_sets"] == []
    (group,) = doc["groups"]
    assert hi.searches == [study_filter(STUDY_UID)]                # one search for the study
    assert group["leader"] == IDS[1]                               # lowest *targeted* id
    assert [(m["image_set_id"], m["spec"], m["peer"]) for m in group["members"]] == [
        (IDS[1], "one", False), (IDS[0], "one", True), (IDS[2], "two", False)]
    peer = group["members"][1]
    assert [(c["key"], c["before"], c["after"]) for c in peer["changes"]] == [
        ("PatientName", "SMITH^JOHN", NEW_NAME)]                   # shown before → after
    request = group["requests"][0]
    assert request["includeStudyImageSets"] is True and not request["force"]
    assert json.loads(request["updatableAttributes"]) == {
        "SchemaVersion": "1.1", "Patient": {"DICOM": {"PatientName": NEW_NAME}}}
    assert group["study"].startswith("study-") and STUDY_UID not in json.dumps(group)
    assert "e" * 32 not in json.dumps(group)                      # not primary: not a member
    plans.validate(doc)
    assert doc["summary"] == {"update": 3, "unchanged": 0, "error": 0,
                              "attributes_changed": 3, "requests": 1}


def test_two_specs_asking_different_values_of_the_study_are_a_plan_error_naming_both():
    doc, hi = _plan([_spec(IDS[0], name="one"),
                     _spec(IDS[1], name="two", patient={"PatientName": "OTHER^NAME"})])
    assert doc["groups"] == []
    assert [e["action"] for e in doc["image_sets"]] == ["error", "error"]
    assert all("one" in e["error"] and "two" in e["error"] and "PatientName" in e["error"]
               for e in doc["image_sets"])
    assert hi.updates == 0


@pytest.mark.parametrize("case", ["series level", "force", "study-wide refused"])
def test_what_the_service_forbids_on_a_primary_image_set_is_refused_at_plan(case):
    policy = PrimaryPolicy()
    if case == "series level":
        s = _spec(IDS[0], series={"1.2.3.0": {"SeriesDescription": "COR"}})
    elif case == "force":
        s = spec(name="s", image_set_id=IDS[0], datastore_id=DS, force=True,
                 series={"1.2.3.0": {"Instances": {SOP + "0": {
                     "00091001": {"vr": "LO", "value": "VENDOR"}}}}})
    else:
        s = _spec(IDS[0])
        policy = PrimaryPolicy(study_wide_updates="refused")
    doc, hi = _plan([s], policy=policy)
    (entry,) = doc["image_sets"]
    assert entry["action"] == "error" and entry["requests"] == [] and doc["groups"] == []
    assert "primary image set" in entry["error"] and "CopyImageSet" in entry["error"]
    assert hi.searches == []


@pytest.mark.parametrize("case", ["series level", "force"])
def test_an_account_that_knows_better_says_so_under_primary_image_sets(case):
    if case == "series level":
        s = _spec(IDS[0], series={"1.2.3.0": {"SeriesDescription": "COR"}})
        policy = PrimaryPolicy(restricted_levels=frozenset({"Patient", "Study"}))
    else:
        s = spec(name="s", image_set_id=IDS[0], datastore_id=DS, force=True,
                 series={"1.2.3.0": {"Instances": {SOP + "0": {
                     "00091001": {"vr": "LO", "value": "VENDOR"}}}}})
        policy = PrimaryPolicy(force="allowed")
    doc, _ = _plan([s], policy=policy)
    (entry,) = doc["image_sets"]
    assert entry["action"] == "update" and not entry["include_study_image_sets"]
    assert entry["force"] is (case == "force")


def test_a_non_primary_image_set_is_planned_alone():
    doc, hi = _plan([_spec(IDS[0])], FakeHealthImaging(primary=False))
    (entry,) = doc["image_sets"]
    assert entry["action"] == "update" and doc["groups"] == []
    assert not entry["requests"][0]["includeStudyImageSets"] and hi.searches == []


def test_a_removal_needs_one_current_value_on_every_member():
    hi = FakeHealthImaging()
    hi.documents[IDS[2]]["Study"]["DICOM"]["StudyDescription"] = "DIFFERENT"
    doc, _ = _plan([_spec(IDS[0], study={"StudyDescription": None})], hi)
    (entry,) = doc["image_sets"]
    assert entry["action"] == "error" and "current value" in entry["error"]
    del hi.documents[IDS[2]]["Study"]["DICOM"]["StudyDescription"]
    doc, _ = _plan([_spec(IDS[0], study={"StudyDescription": None})], hi)
    assert "not every primary image set" in doc["image_sets"][0]["error"]


def test_own_changes_travel_with_the_leader_and_follow_for_the_other_members():
    instance = lambda n: {f"1.2.3.{n}": {"Instances": {SOP + str(n): {"ImageComments": "ok"}}}}
    doc, _ = _plan([_spec(IDS[0], name="one", patient={"PatientName": NEW_NAME},
                          series=instance(0)),
                    _spec(IDS[1], name="two", patient={"PatientName": NEW_NAME},
                          series=instance(1))])
    (group,) = doc["groups"]
    leader_request = json.loads(group["requests"][0]["updatableAttributes"])
    assert leader_request["Study"]["Series"] == {"1.2.3.0": {"Instances": {
        SOP + "0": {"DICOM": {"ImageComments": "ok"}}}}}
    (follower,) = doc["image_sets"]
    assert (follower["spec"], follower["after_study"]) == ("two", group["study"])
    assert "Patient" not in json.loads(follower["requests"][0]["updatableAttributes"])
    assert doc["summary"]["update"] == 3 and doc["summary"]["requests"] == 2
    assert plans.count_per_image_set(doc) == 3          # the follower reports as its member


def test_an_edited_study_update_is_refused():
    doc, _ = _plan([_spec(IDS[0])])
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
    doc, _ = _plan([_spec(IDS[0])], redactor=Redactor(True))
    shown = plans.validate(plans.public_view(doc))
    assert NEW_NAME in "".join(json_pieces(doc))        # the saved plan keeps its payload
    printed = "".join(json_pieces(shown))
    assert NEW_NAME not in printed and "SMITH" not in printed
    assert all(m["before_digest"] is None for m in shown["groups"][0]["members"])
    assert not plans.is_applicable(shown)
    for out in (render_plan(shown), render_plan_markdown(shown)):
        assert NEW_NAME not in out and "SMITH" not in out and STUDY_UID not in out
    unredacted, _ = _plan([_spec(IDS[0])])
    view = plans.redact_values(unredacted, Redactor(True).show)
    assert NEW_NAME not in json.dumps(view["groups"][0]["changes"])
    assert "SMITH" not in json.dumps(view["groups"][0]["members"])


def test_the_study_update_renders_as_one_item_naming_members_and_peers():
    doc, _ = _plan([_spec(IDS[0])])
    text = render_plan(doc)
    assert text.count("~ study update study-") == 1
    assert "(3 primary image sets)" in text
    assert all(f"image set {i} (version 1)" in text for i in IDS)
    assert text.count("no spec targets it: changed for study consistency") == 2
    assert f"on image set {IDS[1]}:" in text
    assert f"1 request to image set {IDS[0]} with includeStudyImageSets=true" in text
    assert "Plan: 3 image sets to update in 1 request (1 study update), 0 unchanged" in text
    assert "| s | study update study-" in render_plan_markdown(doc)


def test_stale_entries_cover_every_member():
    doc, _ = _plan([_spec(IDS[0])])
    state = State.new()
    s = _spec(IDS[0])
    state.put("s", ImageSetRecord(datastore_id=DS, image_set_id=IDS[2], version_before="1",
                                  version_after="1", spec_digest=s.digest, hashes={},
                                  last_operation="apply"))
    stale = operations.stale_entries(doc, state, {"s": s})
    assert ("s", IDS[2]) in stale and ("s", IDS[1]) not in stale


def test_a_stale_member_stops_the_whole_update_before_any_call():
    doc, _ = _plan([_spec(IDS[0])])
    hi = FakeHealthImaging()
    outcomes = Applier(hi, ApplyOptions()).apply_group(
        doc["groups"][0], {"s": _spec(IDS[0])}, skip={("s", IDS[1]): "the state changed"})
    assert [o.status for o in outcomes] == [STALE] * 3
    assert [o.image_set_id for o in outcomes] == IDS
    assert all(IDS[1] in o.reason for o in outcomes)
    assert hi.updates == 0 and hi.searches == [] and hi.reads == []


def test_a_study_listed_by_its_selector_is_not_searched_again():
    s = _spec(IDS[0])
    s.target = Target(datastore_id=DS, selector={"DICOMStudyInstanceUID": STUDY_UID})
    listed = listed_studies(
        [Assignment(s, DS, i, ImageSetSummary(i, "1", is_primary=True)) for i in IDS]
        + [Assignment(s, DS, "e" * 32, ImageSetSummary("e" * 32, "1", is_primary=False))])
    assert {s.image_set_id for s in listed[(DS, STUDY_UID)]} == set(IDS)
    hi = FakeHealthImaging()
    doc, _ = _plan([s], hi)
    assert len(doc["groups"]) == 1 and len(hi.searches) == 1        # the selector's own search


def test_a_study_update_the_service_refused_before_is_one_error_per_member_spec():
    instance = lambda n: {f"1.2.3.{n}": {"Instances": {SOP + str(n): {"ImageComments": "ok"}}}}
    specs = [_spec(IDS[0], name="one", patient={"PatientName": NEW_NAME}, series=instance(0)),
             _spec(IDS[1], name="two", patient={"PatientName": NEW_NAME}, series=instance(1))]
    doc, _ = _plan(specs)
    assert [e["after_study"] for e in doc["image_sets"]] == [doc["groups"][0]["study"]]
    request = doc["groups"][0]["requests"][0]
    refusal = type("Refusal", (), {"kind": "UPDATE_FAILED", "version": "2", "at": "now"})()
    seen = []

    def refused(spec_name, image_set_id, text):
        seen.append(text)
        return refusal if (spec_name, image_set_id) == ("one", IDS[0]) else None

    doc = make_plan(specs, FakeHealthImaging(), Redactor(False), default_datastore=DS,
                    options=PlanOptions(progress=False), refused=refused)
    assert doc["groups"] == [] and plans.validate(doc)
    errors = sorted((e["spec"], e["image_set_id"], e["action"]) for e in doc["image_sets"])
    assert errors == [("one", IDS[0], "error"), ("two", IDS[1], "error")]   # no follower left
    assert all("cannot converge" in e["error"] for e in doc["image_sets"])
    assert Request.from_json(request).canonical() in seen


def test_the_study_index_keeps_only_the_patient_and_study_keys_the_specs_manage():
    """What the planner holds of every image set until the study updates are made: at 100,000
    image sets the whole Patient and Study maps were ~2 KB each."""

    hi = FakeHealthImaging()
    specs = [_spec(IDS[0]), _spec(IDS[1], name="t", study={"StudyDescription": "NEW"})]
    index = StudyIndex(iter(specs))          # (an iterator: read once, for both levels)
    image_set = ImageSet(datastore_id=DS, image_set_id=IDS[0], version_id="1", state="ACTIVE",
                         is_primary=True)
    document = hi.documents[IDS[0]]
    assert len(document["Patient"]["DICOM"]) > 1 and len(document["Study"]["DICOM"]) > 1
    facts = index.read(image_set, document)
    assert set(facts.patient or ()) == {"PatientName"} & set(document["Patient"]["DICOM"])
    assert set(facts.study or ()) == {"StudyDescription"} & set(document["Study"]["DICOM"])
    assert facts.study_uid == STUDY_UID


class LaggingIndex(FakeHealthImaging):
    """Its search does not list ``hidden`` yet (an index that lags behind an import)."""

    def __init__(self, hidden, **kwargs):
        super().__init__(**kwargs)
        self.hidden = set(hidden)

    def search_image_sets(self, datastore_id, filters=None, sort=None):
        return (s for s in super().search_image_sets(datastore_id, filters, sort)
                if s.image_set_id not in self.hidden)


def _by_study(name):
    s = _spec(IDS[0], name=name)
    s.target = Target(datastore_id=DS, selector={"DICOMStudyInstanceUID": STUDY_UID})
    return s


def test_a_listed_study_is_planned_as_soon_as_its_last_image_set_is_read(monkeypatch):
    # What a study update needs (facts, deferred changes, listing, the entries it absorbs)
    # goes as soon as the study is planned, while the plan still reads: a plan of 100,000
    # studies never holds it all. A study found otherwise is planned at the end.
    events: list[str] = []
    settle, finish = StudyIndex.settle, StudyPlanner.finish
    monkeypatch.setattr(StudyIndex, "settle", lambda self, planned: (
        events.append("settled"), settle(self, planned))[1])
    monkeypatch.setattr(StudyPlanner, "finish", lambda self: (
        events.append("all read"), finish(self))[1])
    doc, _ = _plan([_by_study("one")])
    assert events == ["settled", "all read"]
    doc_by_id, _ = _plan([_spec(IDS[0], name="one")])
    assert events[2:] == ["all read", "settled"]
    for made in (doc, doc_by_id):
        (group,) = made["groups"]
        assert {m["image_set_id"] for m in group["members"]} == set(IDS)
        assert made["image_sets"] == []


def test_an_image_set_of_a_study_planned_early_that_its_listing_missed_withdraws_it():
    # The selector's search did not list IDS[2] (index lag); a later spec targets it and
    # asks for the same study-level change. The study was planned from its listing before
    # IDS[2] was read: its update is withdrawn, every spec of it told to plan again.
    hi = LaggingIndex(hidden={IDS[2]})
    doc, _ = _plan([_by_study("one"), _spec(IDS[2], name="two")], hi)
    assert doc["groups"] == []
    assert sorted((e["spec"], e["image_set_id"], e["action"]) for e in doc["image_sets"]) == [
        ("one", IDS[0], "error"), ("one", IDS[1], "error"), ("two", IDS[2], "error")]
    assert all("plan again" in e["error"] and IDS[2] in e["error"] for e in doc["image_sets"])
    assert STUDY_UID not in "".join(json_pieces(doc))
    plans.validate(doc)
    assert hi.updates == 0


def test_a_plan_keeps_the_facts_of_an_image_set_only_while_a_study_update_needs_them(
        monkeypatch):
    # Only an image set that leaves changes to a study update has its study facts kept (a
    # study update reads its peers itself), and only the entries a study not planned yet may
    # change are held as dicts; the others are packed as they come. A plan of 100,000 image
    # sets, read again and unchanged or not primary, held them all (~1.2 KB each) to the end.
    held: list[tuple[int, int]] = []
    finish = StudyPlanner.finish
    monkeypatch.setattr(StudyPlanner, "finish", lambda self: (
        held.append((len(self.studies._facts), len(self.entries.held))), finish(self))[1])
    specs = [_spec(i, name=f"s{n}") for n, i in enumerate(IDS)]
    doc, _ = _plan(specs, FakeHealthImaging(primary=False))
    assert [e["action"] for e in doc["image_sets"]] == ["update"] * 3 and doc["groups"] == []
    doc, _ = _plan(specs, FakeHealthImaging())
    assert len(doc["groups"]) == 1 and doc["image_sets"] == []
    # The primary ones wait for their study, planned at the end.
    assert held == [(0, 0), (3, 3)]
    unchanged = [_spec(i, name=f"u{n}", study={"StudyDescription": "CT"})
                 for n, i in enumerate(IDS)]
    doc, _ = _plan(unchanged, FakeHealthImaging())
    assert [e["action"] for e in doc["image_sets"]] == ["no-op"] * 3 and held[2] == (0, 0)


class TwoStudies(FakeHealthImaging):
    """IDS[0] and IDS[1] in one study, IDS[2] in another; the search filters on the study."""

    OTHER = "1.2.826.0.1.3680043.8.498.2"

    def __init__(self):
        super().__init__()
        self.documents[IDS[2]] = _metadata(series="1.2.3.2", study=self.OTHER)

    def search_image_sets(self, datastore_id, filters=None, sort=None):
        self.searches.append(filters)
        uid = next((v["DICOMStudyInstanceUID"] for f in filters or () for v in f["values"]
                    if "DICOMStudyInstanceUID" in v), None)
        return iter([ImageSetSummary(i, "1", is_primary=True) for i, d in self.documents.items()
                     if uid is None or d["Study"]["DICOM"]["StudyInstanceUID"] == uid])


def test_study_updates_made_out_of_order_come_in_the_order_of_the_specs_that_lead_them():
    # The first study is due only after a later spec targets one of its image sets again; the
    # second is due before that, so it is made first. The plan lists them by their leaders.
    def by_study(name, uid):
        s = _spec(IDS[0], name=name)
        s.target = Target(datastore_id=DS, selector={"DICOMStudyInstanceUID": uid})
        return s

    hi = TwoStudies()
    doc, _ = _plan([by_study("one", STUDY_UID), by_study("two", TwoStudies.OTHER),
                    _spec(IDS[1], name="three")], hi)
    assert [(g["leader"], sorted(m["image_set_id"] for m in g["members"]))
            for g in doc["groups"]] == [(IDS[0], [IDS[0], IDS[1], IDS[1]]), (IDS[2], [IDS[2]])]
    assert [m["spec"] for m in doc["groups"][0]["members"]] == ["one", "one", "three"]
    assert doc["image_sets"] == [] and plans.validate(doc)
