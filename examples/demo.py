"""`make demo`: the local emulator seeded with real DICOM, and reconciler run against it:
validate, plan, apply, drift after an out-of-band change, rollback, and convergence.

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


def start_emulator(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--seed", str(DICOM),
         "--update-delay", "0.3"],
        stdout=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline().strip()
    if not first.startswith("Emulator listening on "):
        proc.kill()
        raise SystemExit(f"demo: the emulator did not start: {first!r}")
    print(first)
    return proc, first.removeprefix("Emulator listening on ")


def main() -> int:
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
               AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)
    say("Starting the local HealthImaging emulator, seeded with the bundled DICOM files")
    emulator, url = start_emulator(env)
    env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"] = url
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    try:
        from reconciler.aws import BotoHealthImaging, ClientSettings

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
        (work / "reconciler.yaml").write_text(config)
        for spec in sorted((work / "specs").iterdir()):
            print(f"--- specs/{spec.name}")
            print(spec.read_text().rstrip())

        say("validate: every spec is checked offline, with no AWS call")
        run(["validate"], work, env, expect=0)

        say("plan: each image set read pinned to its version; the minimal change, saved")
        run(["plan", "--detailed-exitcode", "--out", "plan.json"], work, env, expect=2)

        say("apply: exactly the reviewed requests, each against the version it was planned on")
        run(["apply", "plan.json"], work, env, expect=0)

        say("plan again: the live metadata matches the specs, nothing to change")
        run(["plan", "--detailed-exitcode"], work, env, expect=0)

        say("drift: every image set is still the version our apply made")
        run(["drift"], work, env, expect=0)

        say("Someone edits a managed attribute behind our back (a plain boto3 call)")
        nm = next(s for s in hi.search_image_sets(datastore["datastoreId"], filters=[
            {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": NM_STUDY}]}]))
        live = hi.get_image_set(datastore["datastoreId"], nm.image_set_id)
        hi.update_metadata(datastore["datastoreId"], nm.image_set_id, live.version_id,
                           updatable=json.dumps({"SchemaVersion": 1.1, "Study": {
                               "DICOM": {"StudyDescription": "BONE SCAN (edited by hand)"}}}))
        while hi.get_image_set(datastore["datastoreId"], nm.image_set_id).locked:
            time.sleep(0.1)
        print(f"image set {nm.image_set_id}: StudyDescription changed out of band")

        say("drift: the change is found and named; exit code 2 says so to a scheduler")
        run(["drift"], work, env, expect=2)

        say("rollback: ct-small goes back to the version before our apply (revertToVersionId)")
        run(["rollback", "ct-small", "--auto-approve"], work, env, expect=0)

        say("apply again: the drifted and rolled-back image sets converge to the specs")
        run(["apply", "--auto-approve"], work, env, expect=0)

        say("drift: everything in sync")
        run(["drift"], work, env, expect=0)
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
