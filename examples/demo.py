"""`make demo`: the local emulator seeded with real DICOM, and reconciler run against it:
validate, plan, apply, drift after an out-of-band change, rollback, and convergence.

`DEMO_BEHAVIOURS` runs it against another reading of HealthImaging: emulator behaviours,
separated by spaces, e.g. the strictest reading of primary image sets:

    DEMO_BEHAVIOURS="primary_restriction_include_study=refused" make demo

The project's reconciler.yaml then says what that service forbids (primaryImageSets), the plan
refuses those specs before any write, naming the rule and the way out, and the demo goes on
with the specs the service allows.

Every step prints one line saying what it shows, then runs the real command line in a fresh
working directory, exactly as a user would. The demo fails (exit 1) if a step does not end
with the exit code it should.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DICOM = ROOT / "examples" / "dicom"
SPECS = ROOT / "examples" / "specs"
NM_STUDY = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def run(args: list[str], cwd: Path, env: dict[str, str], expect: int) -> None:
    print("$ reconciler " + " ".join(args), flush=True)
    code = subprocess.call([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=env)
    if code != expect:
        print(f"demo: expected exit code {expect}, got {code}", file=sys.stderr)
        raise SystemExit(1)


def reading() -> dict[str, str]:
    """The emulator behaviours DEMO_BEHAVIOURS asks for (NAME=VALUE, space-separated)."""
    pairs = {}
    for item in os.environ.get("DEMO_BEHAVIOURS", "").split():
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"demo: DEMO_BEHAVIOURS takes NAME=VALUE items, got {item!r}")
        pairs[name] = value
    return pairs


def primary_config(behaviours: dict[str, str]) -> str:
    """reconciler.yaml's primaryImageSets as an account that knows its service writes it."""
    levels = {"off": [], "patient_study": ["Patient", "Study"]}.get(
        behaviours.get("primary_restricted_levels", "patient_series"), ["Patient", "Series"])
    lines = [f"  restrictedLevels: [{', '.join(levels)}]"]
    if behaviours.get("primary_restriction_include_study") == "refused":
        lines.append("  studyWideUpdates: refused")
    if behaviours.get("primary_force") == "allow":
        lines.append("  force: allowed")
    return "primaryImageSets:\n" + "\n".join(lines) + "\n"


def start_emulator(env: dict[str, str], behaviours: dict[str, str]
                   ) -> tuple[subprocess.Popen, str]:
    flags = [arg for name, value in behaviours.items()
             for arg in ("--behaviour", f"{name}={value}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--seed", str(DICOM),
         "--update-delay", "0.3", *flags],
        stdout=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline().strip()
    if not first.startswith("Emulator listening on "):
        proc.kill()
        raise SystemExit(f"demo: the emulator did not start: {first!r}")
    print(first)
    return proc, first.removeprefix("Emulator listening on ")


def refused_specs(work: Path, env: dict[str, str]) -> set[str]:
    """The specs the plan refuses (as JSON, quietly: the text plan is shown next)."""
    result = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--json"], cwd=work,
                            env=env, capture_output=True, text=True)
    doc = json.loads(result.stdout)
    return {e["spec"] for e in doc["image_sets"] if e["action"] == "error"}


def main() -> int:
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
               AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)
    behaviours = reading()
    say("Starting the local HealthImaging emulator, seeded with the bundled DICOM files"
        + (f", under the reading {' '.join(f'{k}={v}' for k, v in behaviours.items())}"
           if behaviours else ""))
    emulator, url = start_emulator(env, behaviours)
    env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"] = url
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    try:
        from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings

        hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=url))
        say("The project's client lists the data stores and searches the image sets")
        [datastore] = hi.list_datastores()
        print(f"data store {datastore['datastoreId']} ({datastore['datastoreName']}, "
              f"{datastore['datastoreStatus']})")
        for summary in hi.search_image_sets(datastore["datastoreId"]):
            tags = summary.dicom_tags
            print(f"image set {summary.image_set_id} version {summary.version}: "
                  f"{tags.get('DICOMNumberOfStudyRelatedSeries')} series, "
                  f"{tags.get('DICOMNumberOfStudyRelatedInstances')} instances")

        say(f"A metadata repository in {work}: reconciler.yaml and three specs")
        shutil.copytree(SPECS, work / "specs")
        config = (ROOT / "examples" / "reconciler.yaml").read_text()
        if behaviours:
            config += primary_config(behaviours)
        (work / "reconciler.yaml").write_text(config)
        for spec in sorted((work / "specs").iterdir()):
            print(f"--- specs/{spec.name}")
            print(spec.read_text().rstrip())

        say("validate: every spec is checked offline, with no AWS call")
        run(["validate"], work, env, expect=0)

        targets: list[str] = []
        if behaviours:
            say("plan under this reading: what its service forbids on primary image sets is "
                "refused before any write, with the rule and the way out")
            refused = refused_specs(work, env)
            run(["plan"], work, env, expect=1 if refused else 0)
            allowed = sorted({p.stem for p in (work / "specs").glob("*.yaml")} - refused)
            if not allowed:
                say("Nothing the specs ask can be changed on these primary image sets under "
                    "this reading; the way out is a non-primary copy (CopyImageSet)")
                return 0
            targets = [f"specs/{name}.yaml" for name in allowed]
            say(f"The demo goes on with what this service allows: {', '.join(allowed)}")

        say("plan: each image set read pinned to its version; the minimal change, saved")
        run(["plan", "--detailed-exitcode", "--out", "plan.json", *targets], work, env,
            expect=2)

        say("apply: exactly the reviewed requests, each against the version it was planned on")
        run(["apply", "plan.json"], work, env, expect=0)

        say("plan again: the live metadata matches the specs, nothing to change")
        run(["plan", "--detailed-exitcode", *targets], work, env, expect=0)

        say("drift: every image set is still the version our apply made")
        run(["drift", *targets], work, env, expect=0)

        if targets and "specs/nm-bone.yaml" not in targets:
            say("Demo finished for this reading")
            return 0
        say("Someone edits a managed attribute behind our back (a plain boto3 call)")
        nm = next(s for s in hi.search_image_sets(datastore["datastoreId"], filters=[
            {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": NM_STUDY}]}]))
        live = hi.get_image_set(datastore["datastoreId"], nm.image_set_id)
        # On a primary image set a Study-level edit goes study-wide, as any writer's must
        # where the service restricts that level.
        hi.update_metadata(datastore["datastoreId"], nm.image_set_id, live.version_id,
                           updatable=json.dumps({"SchemaVersion": 1.1, "Study": {
                               "DICOM": {"StudyDescription": "BONE SCAN (edited by hand)"}}}),
                           include_study_image_sets=bool(live.is_primary))
        while hi.get_image_set(datastore["datastoreId"], nm.image_set_id).locked:
            time.sleep(0.1)
        print(f"image set {nm.image_set_id}: StudyDescription changed out of band")

        say("drift: the change is found and named; exit code 2 says so to a scheduler")
        run(["drift", *targets], work, env, expect=2)

        rolled = "ct-small" if not targets or "specs/ct-small.yaml" in targets else "nm-bone"
        say(f"rollback: {rolled} goes back to the version before our apply "
            "(revertToVersionId)")
        run(["rollback", rolled, "--auto-approve"], work, env, expect=0)

        say("apply again: the drifted and rolled-back image sets converge to the specs")
        run(["apply", "--auto-approve", *targets], work, env, expect=0)

        say("drift: everything in sync")
        run(["drift", *targets], work, env, expect=0)
    finally:
        emulator.send_signal(signal.SIGINT)
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
        shutil.rmtree(work, ignore_errors=True)
    say("Demo finished: the emulator stopped, the working directory was removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
