"""Keyed state hashes end to end (issue 15), through the command line against the emulator.

* the state alone: given the state file and its backups, a dictionary attack on a birth date,
  a sex or a name fails, with every simple construction and the state's own salt; the same
  attack on the same state written as format 1 succeeds (so the attack is real);
* no key: a fresh environment without the key makes drift (and plan, show, apply, rollback)
  fail naming the key source, never report in sync, and write nothing;
* migration: a format-1 state still works, and is re-keyed by the next write;
* rotation: ``state rekey`` keeps drift working, moves the state to another key source, and
  plans saved before still apply;
* no leaks: no key, secret or data key in any output, log, error, state or plan file.
"""

from __future__ import annotations

import base64
import json

import pytest
from apply_support import CT_STUDY, Project
from keys_support import attack, downgrade, files_of, forms, run_with
from plan_files import sealed_envelope

from reconciler.states import State
from reconciler.states.keys import EnvKeySource, FileKeySource, derive, key_source

CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_INSTANCE = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
INSTANCE_PATH = f"Series[{CT_SERIES}].Instances[{CT_INSTANCE}].ImageComments"
CI_SECRET = base64.b64encode(b"ci-secret-for-the-key-tests-only!").decode()


def _drift(project, *args, env=None):
    result = run_with(project, "drift", "--json", *args, env=env or {})
    doc = json.loads(result.stdout) if result.stdout.startswith("{") else None
    return result, doc and {i["spec"]: i for i in doc["image_sets"]}


def _comment_out_of_band(project, ct):
    project.write_oob(ct, updatable={"Study": {"Series": {CT_SERIES: {"Instances": {
        CT_INSTANCE: {"DICOM": {"ImageComments": "edited at the console"}}}}}}})


@pytest.fixture
def with_sex(project, ids):
    """The example specs and one more on the CT image set: a PatientSex."""
    project.write_spec("ct-sex", {"Patient": {"PatientSex": "F"}}, image_set_id=ids["ct-small"])
    return ids


# -- the state alone -----------------------------------------------------------------------------
def test_the_state_and_its_backups_resist_a_dictionary_attack(project, with_sex):
    ids = with_sex
    assert project.run("apply", "--auto-approve").exit_code == 0
    project.write_oob(ids["sc-deid"], updatable={"Patient": {"DICOM": {"PatientName": "REAL^NAME"}}})
    assert project.run("drift").exit_code == 2                        # a write: a backup
    assert project.run("apply", "--auto-approve").exit_code == 0
    files = files_of(project.state_path)
    assert [p.name for p in files] == ["state.json", "state.json.backup"]
    blobs = [p.read_bytes() for p in files]
    image_set_ids = sorted(ids.values())
    assert attack(blobs, image_set_ids) == set()
    for uid in (CT_SERIES, CT_INSTANCE, CT_STUDY):                    # identifiers: keyed too
        assert all(uid.encode() not in blob for blob in blobs)

    # The very same attack on this state as format 1 wrote it finds all three at once.
    legacy = downgrade(project).encode()
    assert {"19700101", "F", "DOE^JANE"} <= attack([legacy], image_set_ids)


# -- no key ---------------------------------------------------------------------------------------
def test_a_fresh_environment_without_the_key_never_reports_in_sync(project, ids, tmp_path):
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert project.run("drift").exit_code == 0          # checkpoint saved: in sync, no call
    assert project.run("plan", "--out", "plan.json").exit_code == 0
    fresh = {"XDG_CONFIG_HOME": str(tmp_path / "fresh-machine")}
    before = project.state_path.read_bytes()
    versions = {name: project.version_count(i) for name, i in ids.items()}
    for args in (["drift"], ["drift", "--json"], ["drift", "--full"], ["plan"],
                 ["show", "plan.json"], ["apply", "plan.json"], ["apply", "--auto-approve"],
                 ["rollback", "ct-small", "--auto-approve"]):
        result = run_with(project, *args, env=fresh)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        assert "no key file at " + str(tmp_path / "fresh-machine" / "reconciler" / "key") \
            in result.stderr, (args, result.stderr)
        assert "in sync" not in result.stdout and "in-sync" not in result.stdout, args
        assert "Drift:" not in result.stdout and "Apply complete" not in result.stdout, args
    assert "the state .reconciler/state.json needs a key file (key id " in \
        run_with(project, "drift", env=fresh).stderr
    assert not (tmp_path / "fresh-machine").exists()    # opening never creates a key
    assert project.state_path.read_bytes() == before
    assert {name: project.version_count(i) for name, i in ids.items()} == versions
    # Another key is as good as none.
    other = tmp_path / "other-machine"
    FileKeySource(other / "reconciler" / "key").key_id(create=True)
    result = run_with(project, "drift", env={"XDG_CONFIG_HOME": str(other)})
    assert result.exit_code == 1 and "holds another key" in result.stderr
    # The key lives in an environment variable that is not set.
    project.write_config({**project.config, "keys": {"source": "env"}})
    result = run_with(project, "drift", env={"RECONCILER_KEY": None})
    assert result.exit_code == 1
    assert "the environment variable RECONCILER_KEY is not set" in result.stderr
    assert "was sealed with a key file" in run_with(
        project, "drift", env={"RECONCILER_KEY": CI_SECRET}).stderr


# -- migration ------------------------------------------------------------------------------------
def test_a_format_1_state_still_works_and_is_re_keyed_by_the_next_write(project, applied):
    legacy = downgrade(project)
    project.state_path.write_text(legacy)
    (project.state_path.parent / "state.json.backup").unlink()
    result = project.run("drift")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "holds salted hashes that are not keyed (state format 1): re-keyed them" in result.stderr
    doc = project.check_state_schema()
    assert doc["format_version"] == "2" and doc["keys"]["generation"] == 1
    old = json.loads(legacy)
    old_hashes = [h for body in old["specs"].values() for rec in body["image_sets"].values()
                  for h in [*rec["hashes"].values(), rec["spec_digest"]]]
    for path in files_of(project.state_path):          # the backup is keyed too
        text = path.read_text()
        assert json.loads(text)["format_version"] == "2", path
        assert not [h for h in old_hashes if h in text] and CT_SERIES not in text, path
    # Drift still finds what it found: an instance's attribute, named by its real UIDs.
    ct = applied["ct-small"]
    _comment_out_of_band(project, ct)
    result, items = _drift(project)
    assert result.exit_code == 2
    assert items["ct-small"]["attributes"] == [
        {"path": INSTANCE_PATH, "live": "edited at the console", "ignored": False}]
    assert project.run("apply", "--auto-approve").exit_code == 0
    assert project.run("drift").exit_code == 0


# -- rotation -------------------------------------------------------------------------------------
def test_rekey_keeps_drift_working_moves_the_key_and_keeps_saved_plans(project, applied):
    ct = applied["ct-small"]
    project.write_oob(applied["sc-deid"], updatable={"Patient": {"DICOM": {"PatientID": "X1"}}})
    assert project.run("plan", "--out", "plan.json", "--detailed-exitcode").exit_code == 2
    generation_1 = project.state()
    result = project.run("state", "rekey")
    assert result.exit_code == 0, result.stderr
    assert "before: key generation 1 (id " in result.stdout
    assert "now:    key generation 2 (id " in result.stdout and "sealed with a key file" in result.stdout
    rekeyed = project.state()
    assert rekeyed["keys"]["generation"] == 2 and rekeyed["serial"] == generation_1["serial"] + 1
    old = [h for body in generation_1["specs"].values() for rec in body["image_sets"].values()
           for h in rec["hashes"].values()]
    for path in files_of(project.state_path):
        assert not [h for h in old if h in path.read_text()], path
    # The plan saved before the rotation still applies (same key source, same serials).
    applied_plan = project.run("apply", "plan.json")
    assert applied_plan.exit_code == 0, applied_plan.stderr
    assert project.run("drift").exit_code == 0
    _comment_out_of_band(project, ct)
    result, items = _drift(project)
    assert result.exit_code == 2 and items["ct-small"]["attributes"][0]["path"] == INSTANCE_PATH

    # Move the state from the key file to a CI secret.
    project.write_config({**project.config, "keys": {"source": "env"}})
    env = {"RECONCILER_KEY": CI_SECRET}
    result = run_with(project, "state", "rekey", env=env)
    assert result.exit_code == 1 and "was sealed with a key file" in result.stderr
    result = run_with(project, "state", "rekey", "--from", "file", env=env)
    assert result.exit_code == 0, result.stderr
    assert "now:    key generation 3" in result.stdout
    assert "an environment variable's key" in result.stdout
    assert project.state()["keys"]["data_key"]["source"] == "env"
    result, items = _drift(project, env=env)
    assert result.exit_code == 2 and items["ct-small"]["attributes"][0]["path"] == INSTANCE_PATH
    project.write_config({key: value for key, value in project.config.items() if key != "keys"})
    result = project.run("drift")
    assert result.exit_code == 1 and "was sealed with an environment variable's key" in result.stderr
    assert project.run("state", "list").exit_code == 0   # ids and versions need no key


# -- no leaks -------------------------------------------------------------------------------------
def test_no_key_material_in_any_output_log_error_or_file(project, ids, tmp_path):
    project.write_config({**project.config, "keys": {"source": "env"}})
    env = {"RECONCILER_KEY": CI_SECRET}
    outputs = []

    def run(*args, ci=True, **extra):
        result = run_with(project, "--verbose", *args, env={**env, **extra}, ci=ci)
        outputs.append((args, result.stdout + result.stderr))
        return result

    assert run("plan", "--out", "plan.json").exit_code == 0
    assert run("show", "plan.json", "--json").exit_code == 0
    assert run("apply", "plan.json", "--json").exit_code == 0
    project.write_oob(ids["ct-small"], updatable={"Patient": {"DICOM": {"PatientName": "X^Y"}}})
    assert run("drift", "--json").exit_code == 2
    assert run("state", "show", "ct-small").exit_code == 0
    assert run("state", "rekey").exit_code == 0
    assert run("rollback", "ct-small", "--auto-approve").exit_code == 0
    assert run("plan", "--out", "plan.json", "--no-redact", ci=False).exit_code in (0, 2)
    # error paths: another key, a key that is not one, none at all, an edited plan
    other = base64.b64encode(b"another-secret-for-key-tests-0001").decode()
    assert run("drift", RECONCILER_KEY=other).exit_code == 1
    assert run("show", "plan.json", RECONCILER_KEY=other).exit_code == 1
    assert run("drift", RECONCILER_KEY="tooshort").exit_code == 1
    assert run("drift", RECONCILER_KEY=None).exit_code == 1
    envelope = sealed_envelope(project.root / "plan.json")
    (project.root / "edited.json").write_text(json.dumps({**envelope, "lineage": None}))
    assert run("apply", "edited.json").exit_code == 1

    source = EnvKeySource(environ=env)
    state = State.from_json(project.state_path.read_bytes(), keys=source)
    chain = state.open_keys()
    plan_key = source.open_data_key(envelope["data_key"], {
        "reconciler:purpose": "saved-plan", "reconciler:lineage": envelope["lineage"]}, "plan")
    secret = base64.b64decode(CI_SECRET)
    assert CI_SECRET in forms(secret)                    # the very text that was in the environment
    material = [secret, derive(secret, "kek/wrap"), plan_key, chain.redaction_key(), *chain.keys,
                *(derive(k, purpose) for k in chain.keys
                  for purpose in ("state/value", "state/uid", "state/spec-digest"))]
    texts = [*outputs, *(((str(p),), p.read_text()) for p in files_of(project.state_path)),
             (("plan.json",), (project.root / "plan.json").read_text())]
    for where, text in texts:
        for key in material:
            for form in forms(key):
                assert form not in text, (where, "holds key material")
    assert "tooshort" not in "".join(text for _, text in outputs)
    assert len(outputs) == 13


def test_a_project_without_setup_creates_its_key_file_once_with_a_notice(tmp_path, emu):
    project = Project(tmp_path / "project", emu)
    home = {"XDG_CONFIG_HOME": str(tmp_path / "new-user")}
    first = run_with(project, "apply", "--auto-approve", env=home)
    assert first.exit_code == 0, first.stderr
    key_file = tmp_path / "new-user" / "reconciler" / "key"
    assert first.stderr.count(f"created the key file {key_file} (mode 0600)") == 1
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    again = run_with(project, "drift", env=home)
    assert again.exit_code == 0 and "created the key file" not in again.stderr
    assert key_source({"file": str(key_file)}).describe() == f"key file {key_file}"
