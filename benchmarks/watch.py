"""``reconciler watch`` measured (docs/watch.md, docs/performance.md), run by ``make bench``
after run_all.py, or alone: ``.venv/bin/python benchmarks/watch.py``.

The emulator publishes its EventBridge events to moto's server (EventBridge → a rule → SQS,
as in AWS); the watcher runs as the real CLI in a child process (``--json-stream``, resync
off). Two figures, each beside what the scheduled ``drift`` gives:

* **time to detection**: from an out-of-band update (the moment UpdateImageSetMetadata
  returned) to the watcher's ``drift_detected`` event for that image set, the median of
  ``BENCH_WATCH_EDITS`` edits; a scheduled drift every ``BENCH_DRIFT_EVERY_MIN`` minutes
  finds a change on average half a period later, plus its own run time (measured here on the
  same fleet);
* **HealthImaging calls per event, idle fleet**: the watcher receives events for image sets it
  does not manage (an unmanaged fleet updated out of band) and for the versions its own apply
  wrote; every call the emulator answers meanwhile is counted where the service sees it.

Prints a table and, last, one JSON line. Knobs: ``BENCH_WATCH_N`` (100 managed image sets),
``BENCH_WATCH_UNMANAGED`` (50), ``BENCH_WATCH_EDITS`` (5), ``BENCH_DRIFT_EVERY_MIN`` (15).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import boto3  # noqa: E402
import fleet as fleetmod  # noqa: E402
from botocore.config import Config  # noqa: E402
from run_all import Recorder, calls, child_env  # noqa: E402

from reconciler.emulator.server import ThreadedEmulator  # noqa: E402

N = int(os.environ.get("BENCH_WATCH_N", "100"))
UNMANAGED = int(os.environ.get("BENCH_WATCH_UNMANAGED", "50"))
EDITS = int(os.environ.get("BENCH_WATCH_EDITS", "5"))
EVERY_MIN = float(os.environ.get("BENCH_DRIFT_EVERY_MIN", "15"))
FAST = {op: 1000 for op in ("UpdateImageSetMetadata", "GetImageSet", "GetImageSetMetadata",
                            "SearchImageSets", "ListImageSetVersions")}


def say(msg: str) -> None:
    print(f"[bench watch {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Watcher:
    """The watcher child process; the time each drift_detected event was read, by image set."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path):
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.detected: dict[str, float] = {}
        self.lines = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines += 1
            event = json.loads(line)
            if event["type"] == "drift_detected":
                self.detected.setdefault(event["image_set_id"], time.monotonic())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> int:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)    # moto's and the emulator's
    # This process's own clients (moto, the emulator, the out-of-band writer): fake keys.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
    bus = boto3.client("events", endpoint_url=moto_url, region_name="us-east-1")
    name = f"bench{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    bus.put_rule(Name=name, EventPattern=json.dumps({"source": ["aws.medical-imaging"]}))
    bus.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn}])

    managed = fleetmod.write_fleet(tmp / "managed", N, seed="watch", multi_every=10**9)
    others = fleetmod.write_fleet(tmp / "unmanaged", UNMANAGED, seed="other", multi_every=10**9)
    emu = ThreadedEmulator(seeds=[str(tmp / "managed"), str(tmp / "unmanaged")],
                           update_delay=0.05, events_endpoint=moto_url)
    emu.start()
    rec = Recorder(emu)
    env = child_env()
    env.update(AWS_ENDPOINT_URL_MEDICAL_IMAGING=emu.url, AWS_ENDPOINT_URL_SQS=moto_url)
    fleetmod.write_specs(tmp / "specs", managed, emu.datastore_id, changed_fraction=0.0)
    config = fleetmod.write_config(tmp / "reconciler.yaml", emu.datastore_id, tmp / "specs",
                                   tmp / "state.json", FAST)
    cli = [sys.executable, "-m", "reconciler", "--config", str(config), "--no-color"]
    hi = boto3.client("medical-imaging", endpoint_url=emu.url, region_name="us-east-1",
                      config=Config(inject_host_prefix=False))

    def edit(image_set_id: str, text: str) -> None:
        # Every image set is at its seeded version 1 (the specs declare the live values, so
        # apply wrote nothing): no read of the bench's own in the counted window.
        hi.update_image_set_metadata(
            datastoreId=emu.datastore_id, imageSetId=image_set_id,
            latestVersionId="1", includeStudyImageSets=True,
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(
                {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": text}}})}})

    try:
        say(f"apply over {N} managed image sets (specs declare the live values)")
        subprocess.run([*cli, "apply", "--auto-approve"], env=env, cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        say("scheduled drift over the same fleet, once, for its run time")
        t = time.monotonic()
        drift = subprocess.run([*cli, "drift", "--json"], env=env, cwd=tmp,
                               stdout=subprocess.DEVNULL)
        drift_wall = time.monotonic() - t
        assert drift.returncode == 0

        watcher = Watcher([*cli, "watch", "--queue-url", queue_url, "--json-stream",
                           "--resync-every", "off"], env, tmp)
        time.sleep(2.0)                    # started, and through the apply's own events
        emu.events.flush()

        say(f"idle: {UNMANAGED} unmanaged image sets updated out of band")
        m, before = rec.mark(), len(emu.events.records())
        for info in others.image_sets:
            edit(info.image_set_id, "UNMANAGED CHANGE")
        time.sleep(1.0)                    # every update completed (Updated sent)
        emu.events.flush()
        idle_events = len(emu.events.records()) - before     # Updating + Updated each
        time.sleep(3.0)                    # the watcher drains them
        idle_calls = calls(rec.window(m)) - UNMANAGED        # less the edits themselves

        say(f"time to detection: {EDITS} out-of-band edits of managed image sets")
        latencies = []
        for info in managed.image_sets[:EDITS]:
            t0 = time.monotonic()
            edit(info.image_set_id, "CHANGED BEHIND OUR BACK")
            deadline = time.monotonic() + 60
            while info.image_set_id not in watcher.detected and time.monotonic() < deadline:
                time.sleep(0.01)
            latencies.append(watcher.detected.get(info.image_set_id, float("nan")) - t0)
        watcher.stop()
    finally:
        emu.stop()
        moto.stop()

    median = statistics.median(latencies)
    scheduled = EVERY_MIN * 60 / 2 + drift_wall
    result = {"watch_detection_median_s": round(median, 2),
              "scheduled_drift_detection_mean_s": round(scheduled, 1),
              "scheduled_drift_every_min": EVERY_MIN, "drift_run_s": round(drift_wall, 2),
              "watch_calls_per_unrelated_event": round(idle_calls / max(1, idle_events), 3),
              "unrelated_events": idle_events, "managed": N}
    print()
    print(f"{'metric':40} {'watch':>10} {'scheduled drift':>16}")
    print(f"{'time to detection (s)':40} {median:>10.2f} {scheduled:>16.1f}  "
          f"(drift every {EVERY_MIN:g} min: half a period + its {drift_wall:.1f}s run)")
    print(f"{'HealthImaging calls per unrelated event':40} "
          f"{result['watch_calls_per_unrelated_event']:>10} {'-':>16}  "
          f"({idle_events} events for unmanaged image sets, {N} managed)")
    print()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
