"""The cost curve of a table spec at fleet size: for each size N (image sets = table rows), a
fleet of N single-image-set studies, an N-row CSV of accession-number fixes (one row per study),
and the real CLI run over it against the emulator: validate, plan (``--out``), apply the saved
plan, drift, a plan again over the state the apply filled (saved, so every image set is read
again; and to look at only, trusting the state), and ``state list`` over the N records. Each step is reported as cost per
image set (ms, service calls) and peak RSS, so growth with N shows at a glance.

    .venv/bin/python benchmarks/table.py                       # 1,000 and 10,000
    BENCH_SCALE=100000 .venv/bin/python benchmarks/table.py    # … and 100,000
    BENCH_TABLE_SIZES=5000 .venv/bin/python benchmarks/table.py

``make bench`` runs it too (``benchmarks/run_all.py``). The emulator runs without quotas here:
the figure is what a table costs the product (loading, checking, planning, applying one spec
per row), not the account's update quota, whose pacing ``make bench`` measures on its own (a
5,000-row apply at the published 0.25 updates per second takes 5.5 hours on AWS whatever the
product does). The emulator runs in this process and the CLI in child processes, so the RSS
and CPU are the CLI's own; calls are counted where the emulator answers them.

Prints one line per step and size, and exactly one JSON line last.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fleet as fleetmod  # noqa: E402
from run_all import READS, UPDATE, Recorder, calls, reconciler, say  # noqa: E402

from reconciler.emulator.server import ThreadedEmulator  # noqa: E402

SCALE = int(os.environ.get("BENCH_SCALE", "10000"))
SIZES = [int(x) for x in os.environ.get(
    "BENCH_TABLE_SIZES", ",".join(str(n) for n in (1000, 10000, 100000) if n <= SCALE)).split(",")]
FAST = {op: 100000 for op in ("UpdateImageSetMetadata", "GetImageSet", "GetImageSetMetadata",
                              "SearchImageSets", "ListImageSetVersions")}
STEPS = ("validate", "plan", "apply", "drift", "plan again", "plan, state trusted",
         "state list")
RSS_TARGET_MB = 400


def write_table(directory: Path, fleet: fleetmod.Fleet, datastore_id: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["study_uid,accession"]
    for info in fleet.image_sets:
        lines.append(f"{info.study_uid},FIX{info.study:07d}")
    (directory / "fixes.csv").write_text("\n".join(lines) + "\n")
    spec = directory / "fixes.yaml"
    spec.write_text("apiVersion: reconciler/v1\nkind: ImageSetMetadataTable\n"
                    "metadata: {name: fixes}\nsource: fixes.csv\n"
                    "match: {DICOMStudyInstanceUID: study_uid}\n"
                    "attributes: {Study.AccessionNumber: accession}\n")
    return spec


def bench_table(tmp: Path, rows: int) -> dict[str, Any]:
    work = tmp / f"table-{rows}"
    say(f"fleet of {rows} single-image-set studies for a {rows}-row table")
    t = time.monotonic()
    seeds = work / "seeds.jsonl"           # one file: 100,000 small files cost more than the data
    fleet = fleetmod.write_fleet_jsonl(seeds, rows, seed="table", multi_every=10**9)
    written = time.monotonic() - t
    t = time.monotonic()
    emu = ThreadedEmulator(seeds=[str(seeds)], update_delay=0.05)
    emu.start()
    seeded = time.monotonic() - t
    rec = Recorder(emu)
    try:
        write_table(work / "specs", fleet, emu.datastore_id)
        config = work / "reconciler.yaml"
        config.write_text(json.dumps({"datastoreId": emu.datastore_id, "specs": ["specs"],
                                      "state": {"path": str(work / "state.json")},
                                      "quotas": FAST}))
        out: dict[str, Any] = {"rows": rows, "fleet_written_s": round(written, 2),
                               "seeded_s": round(seeded, 2)}
        for step, args in (("validate", ("validate",)),
                           ("plan", ("plan", "--out", "plan.json")),
                           ("apply", ("apply", "plan.json", "--max-in-flight", "64")),
                           ("drift", ("drift",)),
                           # Over the state the apply filled, every image set unchanged: a
                           # plan to save reads each again; a plan to look at trusts the
                           # state where the listing shows the version it verified.
                           ("plan again", ("plan", "--out", "plan-again.json")),
                           ("plan, state trusted", ("plan",)),
                           ("state list", ("state", "list"))):
            say(f"reconciler {step} over the {rows}-row table")
            m = rec.mark()
            res = reconciler(work, emu, config, *args,
                             stdout_file=work / f"{step.replace(' ', '-')}.txt")
            events = rec.window(m)
            if res["exit"] not in (0, 2):
                raise SystemExit(f"{step} failed: {res['stderr'][-2000:]}")
            out[step] = {"wall_s": round(res["wall"], 2),
                         "cpu_s": round(res["utime"] + res["stime"], 2),
                         "rss_mb": round(res["maxrss_kb"] / 1024, 1),
                         "reads": calls(events, READS), "updates": calls(events, (UPDATE,))}
        return out
    finally:
        emu.stop()


def report(points: list[dict[str, Any]]) -> list[str]:
    lines = ["table spec cost curve (one study per row; emulator without quotas); per image "
             "set: wall ms, CPU ms, reads, updates; and the step's peak RSS:"]
    for step in STEPS:
        for p in points:
            n, s = p["rows"], p[step]
            lines.append(f"  {step:<19} {n:>7} rows  {1000 * s['wall_s'] / n:7.2f} ms  "
                         f"CPU {1000 * s['cpu_s'] / n:6.2f} ms  {s['reads'] / n:4.2f} reads  "
                         f"{s['updates'] / n:4.2f} updates  peak RSS {s['rss_mb']:6.1f} MB"
                         f"{'' if s['rss_mb'] < RSS_TARGET_MB else ' (over 400 MB)'}  "
                         f"[{s['wall_s']:.1f} s]")
    for p in points:
        lines.append(f"  emulator seeded {p['rows']} image sets in {p['seeded_s']:.1f} s "
                     f"({1000 * p['seeded_s'] / p['rows']:.2f} ms each; the seed files were "
                     f"written in {p['fleet_written_s']:.1f} s)")
    return lines


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reconciler-table-") as raw:
        points = [bench_table(Path(raw), n) for n in SIZES]
    print("\n".join(report(points)))
    print(f"({time.monotonic() - started:.0f} s)")
    print(json.dumps({"table_curve": points}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
