"""A table spec at fleet size: a BENCH_TABLE_ROWS-row CSV (default 5,000) of accession-number
fixes, one row per study of a synthetic fleet, validated, planned and applied by the real CLI
against the emulator. Prints the cost per row (seconds, calls) and the peak RSS of each step.

    .venv/bin/python benchmarks/table.py          # also run by `make bench` (benchmarks/run_all.py)

The emulator runs without quotas here: the figure is what a table costs the product (loading,
checking, planning, applying one spec per row), not the account's update quota, whose pacing
`make bench` measures on its own (a 5,000-row apply at the published 0.25 updates per second
takes 5.5 hours on AWS whatever the product does).
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

ROWS = int(os.environ.get("BENCH_TABLE_ROWS", "5000"))
FAST = {op: 100000 for op in ("UpdateImageSetMetadata", "GetImageSet", "GetImageSetMetadata",
                              "SearchImageSets", "ListImageSetVersions")}


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


def bench_table(tmp: Path, rows: int = ROWS) -> dict[str, Any]:
    work = tmp / "table"
    say(f"fleet of {rows} single-image-set studies for a {rows}-row table")
    fleet = fleetmod.write_fleet(work / "seeds", rows, seed="table", multi_every=10**9)
    emu = ThreadedEmulator(seeds=[str(work / "seeds")], update_delay=0.05)
    emu.start()
    rec = Recorder(emu)
    try:
        write_table(work / "specs", fleet, emu.datastore_id)
        config = work / "reconciler.yaml"
        config.write_text(json.dumps({"datastoreId": emu.datastore_id, "specs": ["specs"],
                                      "state": {"path": str(work / "state.json")},
                                      "quotas": FAST}))
        out: dict[str, Any] = {"rows": rows}
        for step, args in (("validate", ("validate",)),
                           ("plan", ("plan", "--out", "plan.json")),
                           ("apply", ("apply", "plan.json", "--max-in-flight", "64")),
                           ("drift", ("drift",))):
            say(f"reconciler {step} over the {rows}-row table")
            m = rec.mark()
            res = reconciler(work, emu, config, *args, stdout_file=work / f"{step}.txt")
            events = rec.window(m)
            if res["exit"] not in (0, 2):
                raise SystemExit(f"{step} failed: {res['stderr'][-2000:]}")
            out[step] = {"wall_s": res["wall"], "rss_mb": res["maxrss_kb"] / 1024,
                         "reads": calls(events, READS), "updates": calls(events, (UPDATE,))}
        return out
    finally:
        emu.stop()


def report(t: dict[str, Any]) -> list[str]:
    rows = t["rows"]
    lines = [f"table spec, {rows} rows (one study each; emulator without quotas):"]
    for step in ("validate", "plan", "apply", "drift"):
        s = t[step]
        lines.append(f"  {step:<8} {s['wall_s']:7.1f} s  {1000 * s['wall_s'] / rows:6.2f} ms/row  "
                     f"peak RSS {s['rss_mb']:6.1f} MB  {s['reads'] / rows:4.2f} reads/row  "
                     f"{s['updates'] / rows:4.2f} updates/row")
    return lines


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reconciler-table-") as raw:
        result = bench_table(Path(raw))
    print("\n".join(report(result)))
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
