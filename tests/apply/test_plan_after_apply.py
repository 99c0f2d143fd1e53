"""plan after apply: an image set the state verified for this very spec, still at that version,
is not read again (a version's metadata never changes); anything else is read as usual. Calls
are counted by the client that makes them, over HTTP against the emulator.

Under a lagging search index (the search_index_lag reading) a listing made right after a write
shows the version before it; where a test is about the steady state it lets the index catch up
first (``index_caught_up``), and what a plan reads before that is asserted where it matters."""

import json

from apply_support import INDEX_LAG
from reconciler.documents import plans
from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings
from reconciler.spec.config import load_config
from reconciler.healthimaging.pacing import Pacer
from reconciler.engine.planner import PlanOptions, make_plan
from reconciler.dicom.redact import Redactor
from reconciler.engine.operations import known_versions, state_serials
from reconciler.spec.loader import load_specs
from reconciler.states import open_backend


def _plan(project, **options):
    """The plan the CLI would make, and the calls it cost."""
    config = load_config(str(project.config_path))
    specs = load_specs([], config)
    state = open_backend(config.state, config.root).read()
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=project.url),
                           pacer=Pacer(enabled=False))
    doc = make_plan(specs, hi, Redactor(False), default_datastore=config.datastore_id,
                    options=PlanOptions(**options),
                    state_serial=state_serials(state) if state else None,
                    known_version=known_versions(state) if state else None)
    actions = {e["spec"]: e["action"] for e in plans.per_image_set(doc)}
    return actions, dict(hi.calls)


def test_a_fresh_plan_reads_each_selector_target_once_after_its_search(project):
    actions, calls = _plan(project)
    assert set(actions.values()) == {"update"}
    # one search per selector spec; its listing gives the version, so no GetImageSet
    assert calls == {"SearchImageSets": 3, "GetImageSetMetadata": 3}


def test_after_apply_nothing_is_read_until_something_changes(project, applied, index_caught_up):
    actions, calls = _plan(project)
    assert set(actions.values()) == {"no-op"}
    if INDEX_LAG:
        # Right after the apply the index still lists version 1, older than the one the state
        # verified: the listing is not taken at its word, each image set is read.
        assert calls == {"SearchImageSets": 3, "GetImageSet": 3, "GetImageSetMetadata": 3}
        index_caught_up()
        actions, calls = _plan(project)
        assert set(actions.values()) == {"no-op"}
    assert calls == {"SearchImageSets": 3}

    # someone else writes one of them: that one is read (and shows the change), the rest not
    project.write_oob(applied["nm-bone"], {"Study": {"DICOM": {"StudyDescription": "X"}}})
    if INDEX_LAG:
        # Right after their write the index still lists our version: a plain plan judges
        # from the listing, as it says (plan --read-all reads them; below); once the index
        # caught up, the write shows.
        actions, calls = _plan(project)
        assert set(actions.values()) == {"no-op"} and calls == {"SearchImageSets": 3}
        actions, calls = _plan(project, trust_state=False)
        assert actions["nm-bone"] == "update"
        index_caught_up()
    actions, calls = _plan(project)
    assert actions == {"ct-small": "no-op", "nm-bone": "update", "sc-deid": "no-op"}
    assert calls == {"SearchImageSets": 3, "GetImageSetMetadata": 1}

    # --read-all reads everything; an unchanged one read at the version the search listed is
    # confirmed with one GetImageSet (the index may lag), a changed one is not
    actions, calls = _plan(project, trust_state=False)
    assert calls == {"SearchImageSets": 3, "GetImageSetMetadata": 3, "GetImageSet": 2}
    assert actions["nm-bone"] == "update"


def test_a_changed_spec_is_read_again(project, applied, index_caught_up):
    index_caught_up()
    spec = project.specs_dir / "ct-small.yaml"
    spec.write_text(spec.read_text().replace("CT CHEST", "CT THORAX"))
    actions, calls = _plan(project)
    assert actions == {"ct-small": "update", "nm-bone": "no-op", "sc-deid": "no-op"}
    assert calls == {"SearchImageSets": 3, "GetImageSetMetadata": 1}


def test_a_rolled_back_image_set_is_read_again(project, applied, index_caught_up):
    result = project.run("rollback", "ct-small", "--auto-approve", "--json")
    assert result.exit_code == 0, result.stderr
    index_caught_up()
    actions, calls = _plan(project)
    assert actions == {"ct-small": "update", "nm-bone": "no-op", "sc-deid": "no-op"}
    assert calls == {"SearchImageSets": 3, "GetImageSetMetadata": 1}


def test_explicit_image_set_ids_are_looked_up_in_one_listing(project, applied, index_caught_up):
    """Specs naming image sets by id: their versions come from one SearchImageSets listing
    (50 a page), not a GetImageSet each."""
    index_caught_up()
    for name, image_set_id in applied.items():
        path = project.specs_dir / f"{name}.yaml"
        lines = path.read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == "selector:")
        lines[start:start + 2] = [f"  imageSetId: {image_set_id}"]
        path.write_text("\n".join(lines) + "\n")
    first, calls = _plan(project)
    assert set(first.values()) == {"no-op"}
    # the spec digests changed with the target: each is read, by id (GetImageSet first)
    assert calls == {"GetImageSet": 3, "GetImageSetMetadata": 3}
    result = project.run("apply", "--auto-approve", "--json")
    assert result.exit_code == 0, result.stderr
    assert {i["status"] for i in json.loads(result.stdout)["image_sets"]} == {"unchanged"}
    actions, calls = _plan(project)
    assert set(actions.values()) == {"no-op"}
    assert calls == {"SearchImageSets": 1}
