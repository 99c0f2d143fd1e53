"""Every performance target of docs/performance.md, reconciler beside a naive boto3 baseline,
in one run.

``make bench`` (or ``.venv/bin/python benchmarks/run_all.py``). The emulator runs in this
process with the published quotas enforced (``quotas="aws"``) and time sped up
``BENCH_TIME_SCALE``-fold (default 20: UpdateImageSetMetadata 0.25 → 5 per second, one update
slot every 200 ms instead of 4 s; see "Time scale" in benchmarks/README.md for why not more); the
reconciler's own pacer is configured to the same scaled rates through ``reconciler.yaml``
``quotas:``. reconciler runs as the real CLI in child processes (``benchmarks/_child.py``), so
its peak RSS and CPU are its own; every call is counted where the service sees it, by a
recorder wrapped around the emulator's request handler (botocore retries included).

Prints a table and, last, exactly one JSON line. Environment knobs:

* ``BENCH_TIME_SCALE`` (20), ``BENCH_APPLY_N`` (500 image sets for apply/plan/drift),
  ``BENCH_BASELINE_N`` (30: the baseline's share of the same fleet; its figures are per image
  set or per quota, so a smaller slice is enough and keeps the run short),
  ``BENCH_APPLY_PARALLELISM`` (unset: apply's default ``--max-in-flight``),
  ``BENCH_CLIENT_HEADROOM`` (1.0: the client's UpdateImageSetMetadata rate in
  ``reconciler.yaml`` as a fraction of the emulator's quota; for diagnosis),
  ``BENCH_LARGE_INSTANCES`` (5000), ``BENCH_BASELINE_LARGE_INSTANCES`` (500: deepdiff of a
  5,000-instance document alone takes minutes),
* ``BENCH_RSS_SIZES`` (``1000,3000``; the peak RSS at 10,000 is extrapolated linearly from
  them), ``BENCH_FULL=1``: measure plan RSS on 10,000 image sets for real (adds ~2 minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import fleet as fleetmod  # noqa: E402
from baseline import Baseline  # noqa: E402

from reconciler.data import service_facts  # noqa: E402
from reconciler.emulator.protocol import match_route  # noqa: E402
from reconciler.emulator.server import ThreadedEmulator  # noqa: E402

PY = sys.executable
SCALE = float(os.environ.get("BENCH_TIME_SCALE", "20"))
APPLY_N = int(os.environ.get("BENCH_APPLY_N", "500"))
BASELINE_N = int(os.environ.get("BENCH_BASELINE_N", "30"))
READ_RATE_N = int(os.environ.get("BENCH_READ_RATE_N", "150"))
LARGE = int(os.environ.get("BENCH_LARGE_INSTANCES", "5000"))
BASELINE_LARGE = int(os.environ.get("BENCH_BASELINE_LARGE_INSTANCES", "250"))
FULL = os.environ.get("BENCH_FULL") == "1"
APPLY_PARALLELISM = os.environ.get("BENCH_APPLY_PARALLELISM")   # unset: the product's default
# The client's UpdateImageSetMetadata rate as a fraction of the emulator's (diagnostics only).
CLIENT_HEADROOM = float(os.environ.get("BENCH_CLIENT_HEADROOM", "1.0"))
RSS_SIZES = [10000] if FULL else [int(x) for x in
                                  os.environ.get("BENCH_RSS_SIZES", "1000,3000").split(",")]
BASELINE_RSS_SIZES = [int(x) for x in os.environ.get("BENCH_BASELINE_RSS_SIZES", "200,600").split(",")]
RSS_TARGET_N = 10000
READS = ("GetImageSet", "GetImageSetMetadata", "SearchImageSets", "ListImageSetVersions")
UPDATE = "UpdateImageSetMetadata"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ plumbing
class Recorder:
    """Every service call the emulator answers: (operation, HTTP status, monotonic time)."""

    def __init__(self, emu: ThreadedEmulator):
        self.events: list[tuple[str, int, float]] = []
        self._lock = threading.Lock()
        app = emu.app
        original = app.service

        def service(request, path):
            response = original(request, path)
            try:
                op = match_route(request.method, path)[0].name
            except Exception:  # noqa: BLE001
                op = "?"
            with self._lock:
                self.events.append((op, response.status_code, time.monotonic()))
            return response

        app.service = service

    def mark(self) -> int:
        return len(self.events)

    def window(self, start: int, end: int | None = None) -> list[tuple[str, int, float]]:
        with self._lock:
            return self.events[start:end]


def calls(events, ops=None, status=None) -> int:
    return sum(1 for op, st, _ in events
               if (ops is None or op in ops) and (status is None or st == status))


def throttled(events) -> int:
    return calls(events, status=429)


def rate(events, op=UPDATE, skip: int = 0) -> tuple[float, int]:
    """Accepted calls per second from the first accepted call (after ``skip``, the burst the
    quota allows at once) to the last."""
    times = sorted(t for o, st, t in events if o == op and st == 200)
    if len(times) < skip + 2:
        return 0.0, len(times)
    return (len(times) - 1 - skip) / (times[-1] - times[skip]), len(times)


def scaled_quotas(scale: float | None = None) -> dict[str, float]:
    rates = {op: q["rate"] * (scale or SCALE) for op, q in service_facts.quotas().items()}
    rates[UPDATE] *= CLIENT_HEADROOM
    return rates


def emulator(seeds: list[str], scale: float | None = None) -> tuple[ThreadedEmulator, Recorder, float]:
    t = time.monotonic()
    emu = ThreadedEmulator(seeds=seeds, quotas="aws", time_scale=scale or SCALE, update_delay=0.5)
    seeded = time.monotonic() - t
    emu.start()
    return emu, Recorder(emu), seeded


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CI"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=str(ROOT))
    return env


def reconciler(workdir: Path, emu: ThreadedEmulator, config: Path, *args: str,
               stdout_file: Path | None = None) -> dict[str, Any]:
    """The real CLI in a child process; its output, exit code, peak RSS and CPU."""
    usage = workdir / f"rusage-{time.monotonic_ns()}.json"
    cmd = [PY, str(HERE / "_child.py"), str(usage), "--", "--config", str(config),
           "--endpoint-url", emu.url, "--region", "us-east-1", "--no-color", *args]
    t = time.monotonic()
    with open(stdout_file, "w") if stdout_file else open(os.devnull, "w") as sink:
        proc = subprocess.run(cmd, cwd=workdir, env=child_env(), text=True,
                              stdout=subprocess.PIPE if stdout_file is None else sink,
                              stderr=subprocess.PIPE)
    out = proc.stdout if stdout_file is None else stdout_file.read_text()
    result = json.loads(usage.read_text()) if usage.exists() else {}
    result.update(exit=proc.returncode, stdout=out, stderr=proc.stderr,
                  wall=time.monotonic() - t)
    return result


def surfaced_throttles(*outputs: str) -> int:
    return sum(o.count("ThrottlingException") + o.count("Rate exceeded") for o in outputs)


# ------------------------------------------------------------------------------ benches
def bench_apply(tmp: Path) -> dict[str, Any]:
    """plan → apply (saved plan) → drift on an untouched fleet; the baseline on a slice."""
    work = tmp / "apply"
    say(f"fleet of {APPLY_N} image sets")
    t = time.monotonic()
    fleet = fleetmod.write_fleet(work / "seeds", APPLY_N)
    written = time.monotonic() - t
    emu, rec, seeded = emulator([str(work / "seeds")])
    try:
        specs = fleetmod.write_specs(work / "specs", fleet, emu.datastore_id)
        config = fleetmod.write_config(work / "reconciler.yaml", emu.datastore_id,
                                       work / "specs", work / "state.json", scaled_quotas())
        r: dict[str, Any] = {"n": APPLY_N, "changed": specs.changed, "specs": specs.specs,
                             "changed_attributes": specs.changed_attributes,
                             "seed_write_s": written, "seed_load_s": seeded}

        say("reconciler plan")
        m = rec.mark()
        plan = reconciler(work, emu, config, "plan", "--out", "plan.json")
        ev = rec.window(m)
        assert plan["exit"] == 0, plan["stderr"][-2000:]
        r["plan"] = {"reads": calls(ev, READS), "by_op": dict(Counter(o for o, _, _ in ev)),
                     "throttled": throttled(ev), "wall": plan["wall"]}

        say("reconciler apply (saved plan)")
        m = rec.mark()
        extra = ["--max-in-flight", APPLY_PARALLELISM] if APPLY_PARALLELISM else []
        apply = reconciler(work, emu, config, "apply", "plan.json", "--json", *extra)
        ev = rec.window(m)
        report = json.loads(apply["stdout"]) if apply["stdout"].strip().startswith("{") else {}
        upd_rate, accepted = rate(ev)
        r["apply"] = {"exit": apply["exit"], "updates_accepted": accepted,
                      "update_calls": calls(ev, [UPDATE]), "rate": upd_rate,
                      "throttled": throttled(ev),
                      "throttled_updates": calls(ev, [UPDATE], 429),
                      "by_op": dict(Counter(o for o, _, _ in ev)), "wall": apply["wall"],
                      "statuses": dict(Counter(i.get("status") for i in
                                               report.get("image_sets", [])))}

        say("reconciler drift (untouched fleet)")
        m = rec.mark()
        drift = reconciler(work, emu, config, "drift", "--json")
        ev = rec.window(m)
        r["drift"] = {"exit": drift["exit"], "calls": len(ev), "by_op": dict(Counter(o for o, _, _ in ev)),
                      "throttled": throttled(ev), "wall": drift["wall"]}
        say("reconciler plan again (untouched since apply)")
        m = rec.mark()
        replan = reconciler(work, emu, config, "plan", "--json")
        ev = rec.window(m)
        assert replan["exit"] == 0, replan["stderr"][-2000:]
        r["replan"] = {"reads": calls(ev, READS), "by_op": dict(Counter(o for o, _, _ in ev)),
                       "wall": replan["wall"]}
        r["surfaced"] = surfaced_throttles(plan["stdout"], plan["stderr"], apply["stdout"],
                                           apply["stderr"], drift["stdout"], drift["stderr"],
                                           replan["stdout"], replan["stderr"])

        # ---- the baseline, same fleet, back to its seeded state ---------------------------
        emu.reset()                    # data, faults and quota buckets as seeded
        subset = dict(list(specs.desired.items())[:BASELINE_N])
        changed_subset = sum(1 for i in fleet.image_sets[:BASELINE_N]
                             if specs.desired[i.image_set_id]["Study"]["StudyDescription"]
                             != "FLEET STUDY")
        b = Baseline(emu.url, emu.datastore_id)
        say(f"baseline plan + apply + drift on {len(subset)} image sets")
        m = rec.mark()
        b.plan(subset)
        ev = rec.window(m)
        base: dict[str, Any] = {"n": len(subset), "changed": changed_subset,
                                "plan_reads": calls(ev, READS), "plan_throttled": throttled(ev)}
        m = rec.mark()
        t = time.monotonic()
        b.apply(subset)
        ev = rec.window(m)
        brate, baccepted = rate(ev)
        base.update(updates_accepted=baccepted, update_calls=calls(ev, [UPDATE]), rate=brate,
                    throttled=throttled(ev), throttled_updates=calls(ev, [UPDATE], 429),
                    wall=time.monotonic() - t)
        recorded = {i: emu.backend.metadata(i) for i in subset}
        m = rec.mark()
        b.drift(recorded)
        ev = rec.window(m)
        base.update(drift_calls=len(ev), drift_throttled=throttled(ev),
                    errors=dict(b.errors), surfaced=b.errors.get("ThrottlingException", 0))
        r["baseline"] = base
        return r
    finally:
        emu.stop()


def bench_read_rate(tmp: Path) -> dict[str, Any]:
    """Plan's GetImageSet rate against the real (time scale 1) 25/s quota: do reads run in
    parallel up to the quota? (At the scaled rates the emulator, not the quota, is the limit.)"""
    work = tmp / "reads"
    fleet = _truncate(fleetmod.write_fleet(work / "seeds", READ_RATE_N, seed="reads"), READ_RATE_N)
    emu, rec, _ = emulator([str(work / "seeds")], scale=1.0)
    try:
        fleetmod.write_specs(work / "specs", fleet, emu.datastore_id)
        config = fleetmod.write_config(work / "reconciler.yaml", emu.datastore_id, work / "specs",
                                       work / "state.json", scaled_quotas(1.0))
        say(f"plan read rate at time scale 1 over {len(fleet.image_sets)} image sets")
        m = rec.mark()
        res = reconciler(work, emu, config, "plan")
        assert res["exit"] == 0, res["stderr"][-2000:]
        burst = int(service_facts.quotas()["GetImageSet"]["burst"])
        r, n = rate(rec.window(m), "GetImageSet", skip=burst)
        out = {"rate": r, "calls": n, "throttled": throttled(rec.window(m)),
               "surfaced": surfaced_throttles(res["stdout"], res["stderr"])}
        emu.reset()
        say("baseline reads at time scale 1")
        b = Baseline(emu.url, emu.datastore_id)
        m = rec.mark()
        b.plan({i.image_set_id: {} for i in fleet.image_sets})
        br, _ = rate(rec.window(m), "GetImageSet", skip=burst)
        out.update(baseline_rate=br, baseline_throttled=throttled(rec.window(m)),
                   baseline_surfaced=b.errors.get("ThrottlingException", 0))
        return out
    finally:
        emu.stop()


def bench_large(tmp: Path) -> dict[str, Any]:
    work = tmp / "large"
    (work / "seeds").mkdir(parents=True)
    say(f"one image set of {LARGE} instances (and {BASELINE_LARGE} for the baseline)")
    isid, doc = fleetmod.large_document(LARGE, seed="large")
    bid, bdoc = fleetmod.large_document(BASELINE_LARGE, seed="large-baseline")
    for name, d in (("large", doc), ("baseline", bdoc)):
        (work / "seeds" / f"{name}.json").write_text(json.dumps(d, separators=(",", ":")))
    series_uid = next(iter(doc["Study"]["Series"]))
    sop = next(iter(doc["Study"]["Series"][series_uid]["Instances"]))
    del doc, bdoc
    emu, rec, seeded = emulator([str(work / "seeds")])
    try:
        attrs = {"Patient": {"PatientName": "LARGE^PATIENT^^^CORRECTED"},
                 "Study": {"StudyDescription": "BENCH LARGE"},
                 "Series": {series_uid: {"SeriesDescription": "BENCH SERIES",
                                         "Instances": {sop: {"ImageComments": "reviewed"}}}}}
        import yaml
        spec = {"apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
                "metadata": {"name": "large"}, "target": {"imageSetId": isid},
                "attributes": attrs}
        (work / "large.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        config = fleetmod.write_config(work / "reconciler.yaml", emu.datastore_id,
                                       work / "large.yaml", work / "state.json", scaled_quotas())
        battrs = {"Patient": {"PatientName": "LARGE^PATIENT^^^CORRECTED"},
                  "Study": {"StudyDescription": "BENCH LARGE"}}
        say("large plan CPU vs gunzip+parse (child process)")
        proc = subprocess.run([PY, str(HERE / "_large_plan.py"), emu.url, str(config),
                               str(work / "large.yaml"), isid, bid, json.dumps(battrs)],
                              cwd=work, env=child_env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out.update(seed_load_s=seeded, instances=LARGE, baseline_instances=BASELINE_LARGE,
                   throttled=throttled(rec.window(0)))
        return out
    finally:
        emu.stop()


def _truncate(fleet: fleetmod.Fleet, n: int) -> fleetmod.Fleet:
    """The first ``n`` image sets, not splitting a study."""
    keep, studies = [], set()
    for info in fleet.image_sets:
        if len(keep) >= n and info.study not in studies:
            break
        keep.append(info)
        studies.add(info.study)
    return fleetmod.Fleet(fleet.directory, keep)


def bench_rss(tmp: Path) -> dict[str, Any]:
    work = tmp / "rss"
    biggest = max(RSS_SIZES)
    say(f"fleet of {biggest} image sets for peak RSS")
    t = time.monotonic()
    fleet = fleetmod.write_fleet(work / "seeds", biggest, seed="rss")
    written = time.monotonic() - t
    emu, rec, seeded = emulator([str(work / "seeds")])
    say(f"seeded {biggest} documents in {seeded:.1f}s (written in {written:.1f}s)")
    points, base_points = [], []
    try:
        for n in sorted(set(RSS_SIZES) | set(BASELINE_RSS_SIZES)):
            sub = _truncate(fleet, n)
            specs = fleetmod.write_specs(work / f"specs-{n}", sub, emu.datastore_id)
            if n in RSS_SIZES:
                config = fleetmod.write_config(work / f"reconciler-{n}.yaml", emu.datastore_id,
                                               work / f"specs-{n}", work / f"state-{n}.json",
                                               scaled_quotas())
                say(f"reconciler plan over {len(sub.image_sets)} image sets")
                m = rec.mark()
                res = reconciler(work, emu, config, "plan", "--out", f"plan-{n}.json",
                                 stdout_file=work / f"plan-{n}.txt")
                ev = rec.window(m)
                assert res["exit"] == 0, res["stderr"][-2000:]
                points.append({"n": len(sub.image_sets), "rss_mb": res["maxrss_kb"] / 1024,
                               "cpu_s": res["utime"] + res["stime"], "wall": res["wall"],
                               "reads": calls(ev, READS), "throttled": throttled(ev),
                               "surfaced": surfaced_throttles(res["stdout"], res["stderr"])})
            if n in BASELINE_RSS_SIZES:
                desired_file = work / f"desired-{n}.json"
                desired_file.write_text(json.dumps(specs.desired))
                say(f"baseline plan over {len(sub.image_sets)} image sets")
                proc = subprocess.run([PY, str(HERE / "baseline.py"), "plan", emu.url,
                                       emu.datastore_id, str(desired_file)],
                                      env=child_env(), capture_output=True, text=True)
                assert proc.returncode == 0, proc.stderr[-2000:]
                b = json.loads(proc.stdout.strip().splitlines()[-1])
                base_points.append({"n": len(sub.image_sets), "rss_mb": b["maxrss_kb"] / 1024})
    finally:
        emu.stop()

    def at_target(pts: list[dict[str, Any]]) -> float:
        """Linear in the fleet size through the two largest measurements."""
        if len(pts) == 1 or pts[-1]["n"] >= RSS_TARGET_N:
            p = pts[-1]
            return p["rss_mb"] if p["n"] >= RSS_TARGET_N else p["rss_mb"] * RSS_TARGET_N / p["n"]
        a, b = pts[-2], pts[-1]
        slope = (b["rss_mb"] - a["rss_mb"]) / (b["n"] - a["n"])
        return b["rss_mb"] + slope * (RSS_TARGET_N - b["n"])

    return {"points": points, "base_points": base_points, "rss_mb": at_target(points),
            "baseline_rss_mb": at_target(base_points),
            "measured_at": [p["n"] for p in points],
            "baseline_measured_at": [p["n"] for p in base_points],
            "extrapolated": points[-1]["n"] < RSS_TARGET_N,
            "seed_load_s": seeded, "seed_write_s": written}


# ------------------------------------------------------------------------------ report
def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as raw:
        tmp = Path(raw)
        a = bench_apply(tmp)
        rr = bench_read_rate(tmp)
        lg = bench_large(tmp)
        rss = bench_rss(tmp)
        import table as tablemod   # (imports this module's helpers)
        tb = [tablemod.bench_table(tmp, n) for n in tablemod.SIZES]
    quota = service_facts.quotas()[UPDATE]["rate"] * SCALE
    base = a["baseline"]
    planned = a["n"]
    rec_metrics = {
        "update_rate_over_quota": round(a["apply"]["rate"] / quota, 3),
        "updates_per_changed_image_set": round(a["apply"]["updates_accepted"] / max(1, a["changed"]), 3),
        "reads_per_planned_image_set": round(a["plan"]["reads"] / planned, 3),
        "drift_calls_per_image_set_idle": round(a["drift"]["calls"] / planned, 3),
        "large_plan_cpu_over_parse": round(lg["plan_cpu"] / lg["parse_cpu"], 2),
        "plan_peak_rss_mb": round(rss["rss_mb"], 1),
        "throttling_errors_surfaced": a["surfaced"] + rr["surfaced"]
        + sum(p["surfaced"] for p in rss["points"]),
    }
    base_metrics = {
        "update_rate_over_quota": round(base["rate"] / quota, 3),
        "updates_per_changed_image_set": round(base["updates_accepted"] / max(1, base["changed"]), 3),
        "reads_per_planned_image_set": round(base["plan_reads"] / base["n"], 3),
        "drift_calls_per_image_set_idle": round(base["drift_calls"] / base["n"], 3),
        "large_plan_cpu_over_parse": round(lg["baseline_plan_cpu"] / lg["baseline_parse_cpu"], 2),
        "plan_peak_rss_mb": round(rss["baseline_rss_mb"], 1),
        "throttling_errors_surfaced": base["surfaced"] + rr["baseline_surfaced"],
    }
    extra = {"plan_read_rate_over_quota*": round(rr["rate"] / service_facts.quotas()["GetImageSet"]["rate"], 3),
             "replan_reads_per_image_set*": round(a["replan"]["reads"] / planned, 3)}
    extra_base = {"plan_read_rate_over_quota*": round(rr["baseline_rate"] / service_facts.quotas()["GetImageSet"]["rate"], 3),
                  "replan_reads_per_image_set*": base_metrics["reads_per_planned_image_set"]}
    rss_note = (f"measured at {', '.join(map(str, rss['measured_at']))} image sets (baseline "
                f"{', '.join(map(str, rss['baseline_measured_at']))}), extrapolated linearly "
                f"to 10,000" if rss["extrapolated"] else "10,000 image sets")
    rows = [
        ("update_rate_over_quota", ">= 0.95", lambda v: v >= 0.95,
         f"{a['n']} image sets ({a['changed']} changed); baseline {base['n']}; quota {quota:g}/s "
         f"(0.25 x time scale {SCALE:g})"),
        ("updates_per_changed_image_set", "<= 1", lambda v: v <= 1 + 1e-9,
         "accepted UpdateImageSetMetadata / changed image sets (a study group is one)"),
        ("reads_per_planned_image_set", "<= 2", lambda v: v <= 2,
         "GetImageSet+GetImageSetMetadata+SearchImageSets per targeted image set"),
        ("plan_read_rate_over_quota*", ">= ~0.9", lambda v: v >= 0.9,
         f"GetImageSet rate of plan / 25 per second, time scale 1, {rr['calls']} image sets "
         f"(not in the JSON line)"),
        ("replan_reads_per_image_set*", "searches only",
         lambda v: set(a["replan"]["by_op"]) <= {"SearchImageSets"},
         f"reads of plan right after the apply (nothing changed since) / image sets: "
         f"{a['replan']['by_op'].get('SearchImageSets', 0)} SearchImageSets (one per selector "
         f"spec, plus the N/50 listing for the others), no per-image-set read (not in the "
         f"JSON line; the baseline reads everything again)"),
        ("drift_calls_per_image_set_idle", "~ 0.02 (N/50)", lambda v: v <= 0.03,
         "all calls of drift over an untouched fleet / image sets in the state"),
        ("large_plan_cpu_over_parse", "<= ~2", lambda v: v <= 2.2,
         f"{LARGE} instances ({lg['json_bytes'] / 1e6:.0f} MB JSON); baseline deepdiff on "
         f"{BASELINE_LARGE}"),
        ("plan_peak_rss_mb", "< 300", lambda v: v < 300, rss_note),
        ("throttling_errors_surfaced", "== 0", lambda v: v == 0,
         "ThrottlingException reaching the user (after retries)"),
    ]
    width = (32, 11, 11, 15, 5)
    header = ("metric", "reconciler", "baseline", "target", "ok?")
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, width)) + "  notes")
    print("  ".join("-" * w for w in width) + "  " + "-" * 40)
    for key, target, ok, note in rows:
        v, bv = {**rec_metrics, **extra}[key], {**base_metrics, **extra_base}[key]
        print("  ".join(str(x).ljust(w) for x, w in
                        zip((key, v, bv, target, "yes" if ok(v) else "NO"), width)) + "  " + note)
    print()
    print("details:")
    print(f"  apply: {a['apply']['updates_accepted']} updates accepted in {a['apply']['wall']:.1f}s "
          f"wall, {a['apply']['throttled']} calls answered 429 by the emulator (retried "
          f"inside botocore), statuses {a['apply']['statuses']}, calls {a['apply']['by_op']}")
    print(f"  plan again after apply: calls {a['replan']['by_op']} in {a['replan']['wall']:.1f}s")
    print(f"  plan:  calls {a['plan']['by_op']} in {a['plan']['wall']:.1f}s; "
          f"drift: calls {a['drift']['by_op']} in {a['drift']['wall']:.1f}s")
    print(f"  plan reads at scale 1: {rr['calls']} GetImageSet at {rr['rate']:.1f}/s "
          f"({rr['throttled']} answered 429); baseline {rr['baseline_rate']:.1f}/s "
          f"({rr['baseline_throttled']} answered 429)")
    print(f"  baseline: {base['updates_accepted']} updates accepted of {base['update_calls']} "
          f"sent ({base['throttled_updates']} answered 429), errors surfaced {base['errors']}, "
          f"{base['wall']:.1f}s")
    print(f"  large: plan CPU {lg['plan_cpu']:.2f}s, gunzip+parse {lg['parse_cpu']:.2f}s "
          f"({lg['gzip_bytes'] / 1e6:.2f} MB gzip); baseline on {BASELINE_LARGE} instances: "
          f"{lg['baseline_plan_cpu']:.2f}s vs parse {lg['baseline_parse_cpu']:.3f}s")
    for p in rss["points"]:
        print(f"  rss:   plan over {p['n']} image sets: {p['rss_mb']:.0f} MB peak, CPU {p['cpu_s']:.1f}s, "
              f"wall {p['wall']:.1f}s, {p['reads']} reads")
    for p in rss["base_points"]:
        print(f"  rss:   baseline plan over {p['n']} image sets: {p['rss_mb']:.0f} MB peak")
    print(f"  seeding: {a['n']} documents loaded in {a['seed_load_s']:.1f}s; "
          f"{max(RSS_SIZES)} in {rss['seed_load_s']:.1f}s; the large set in {lg['seed_load_s']:.1f}s")
    for line in tablemod.report(tb):
        print(f"  {line}")
    print(f"  total {time.monotonic() - started:.0f}s")
    print()
    print(json.dumps({**rec_metrics, "baseline": base_metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
