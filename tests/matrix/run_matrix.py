"""``make matrix``: the end-to-end subset once per reading of the emulator's named behaviours.

The readings are enumerated from the registry (tests/matrix/readings.py: the defaults, every
alternative value of every choice in reconciler/emulator/behaviours.py ``CHOICES``, and
``validation=sync``). Each runs the SUBSET below in its own pytest process, the reading given
through ``RECONCILER_TEST_READING``. Prints one line per reading as it finishes, then a table
(reading → passed/failed, seconds, failing tests) and, last, a plain ``N passed, M failed``
line counting *readings*. Exits 1 when any reading fails.

    python tests/matrix/run_matrix.py                  # the whole matrix
    python tests/matrix/run_matrix.py --only versions_order=asc --only validation=sync
    python tests/matrix/run_matrix.py --list           # the readings, nothing run

Each reading's pytest output and JUnit XML go to --logs (default build/matrix/).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

from matrix import readings  # noqa: E402

# The end-to-end subset, chosen for what a reading can change: plan, apply, plan after apply,
# drift (full and incremental), rollback, import, study updates on primary image sets, stale
# saved plans, conflicts and faults, concurrent applies, the pull-request flow, and specs that
# are removed or renamed. Not here:
# tests/emulator (they test the emulator's default behaviours themselves), unit tests with no
# emulator, and the slow fault-injection sweeps of tests/hardening (timing, not readings).
SUBSET = [
    "tests/apply/test_apply_e2e.py",
    "tests/apply/test_plan_after_apply.py",
    "tests/apply/test_drift_e2e.py",
    "tests/apply/test_drift_incremental.py",
    "tests/apply/test_rollback_e2e.py",
    "tests/apply/test_grouping_apply.py",
    "tests/apply/test_table_e2e.py",
    "tests/apply/test_saved_plan_staleness.py",
    "tests/apply/test_conflicts_and_faults.py",
    # (not its lock-waiting test: 20-60 s of holding a lock, the same under every reading)
    "tests/apply/test_concurrent_apply.py::test_two_racing_applies_of_the_same_specs_write_once",
    "tests/apply/test_concurrent_apply.py::test_a_state_that_cannot_be_saved_stops_further_writes",
    "tests/engine/test_import.py",
    "tests/engine/test_plan_golden.py",
    "tests/gitops/test_pull_request_flow.py::test_pull_request_plan_merge_apply_then_scheduled_drift",
    # what leaves the specs: removed (forget, revert), renamed, limits. (Not the GitOps
    # lifecycle loop, tests/gitops/test_lifecycle_flow.py: 20 s a reading, a third of the
    # subset's time, for the same engine paths these cover; `make test` runs it. CI's 30
    # minutes hold `make test` and the whole matrix.)
    "tests/apply/test_lifecycle_e2e.py",
    "tests/apply/test_renames_e2e.py",
    "tests/apply/test_limits_e2e.py",
]
TIMEOUT = 240          # seconds for one reading (~35 s on a quiet 2-core machine): a hang fails it


@dataclass
class Outcome:
    reading: readings.Reading
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None       # the run itself broke (timeout, collection error, crash)

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None and self.passed > 0


def _slug(reading: readings.Reading) -> str:
    return "".join(c if c.isalnum() or c in "=-_." else "+" for c in reading.label)


def run_one(reading: readings.Reading, logs: Path, workers: str, paths: list[str]) -> Outcome:
    xml = logs / f"{_slug(reading)}.xml"
    log = logs / f"{_slug(reading)}.log"
    xml.unlink(missing_ok=True)
    env = dict(os.environ, **{readings.ENV: reading.label})
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
           "-n", workers, f"--junitxml={xml}", *paths]
    outcome = Outcome(reading)
    start = time.monotonic()
    with log.open("w") as out:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=TIMEOUT)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code, outcome.error = None, f"timed out after {TIMEOUT} s"
    outcome.seconds = time.monotonic() - start
    if xml.exists():
        for case in ET.parse(xml).iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                outcome.failed.append(name.replace("tests.", "", 1))
            elif case.find("skipped") is None:
                outcome.passed += 1
    if outcome.error is None and code not in (0, 1):
        outcome.error = f"pytest exited {code} (see {log.relative_to(REPO)})"
    return outcome


def table(outcomes: list[Outcome]) -> str:
    width = max(len(o.reading.label) for o in outcomes)
    lines = [f"{'reading':<{width}}  result  tests     secs  failing tests",
             f"{'-' * width}  ------  --------  ----  -------------"]
    for o in outcomes:
        result = "passed" if o.ok else "FAILED"
        counts = f"{o.passed}/{o.passed + len(o.failed)}"
        detail = o.error or ", ".join(o.failed[:4]) + (
            f" … and {len(o.failed) - 4} more" if len(o.failed) > 4 else "")
        lines.append(f"{o.reading.label:<{width}}  {result}  {counts:<8}  {o.seconds:4.0f}  "
                     f"{detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[],
                        help="run this reading (name=value[,name=value]; repeatable)")
    parser.add_argument("--list", action="store_true", help="print the readings and stop")
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers a reading")
    parser.add_argument("--logs", default=str(REPO / "build" / "matrix"), help="output directory")
    parser.add_argument("--all", action="store_true",
                        help="also run the readings listed as pending (readings.PENDING)")
    parser.add_argument("paths", nargs="*", help="test paths instead of the e2e subset")
    args = parser.parse_args(argv)

    chosen = [readings.parse(text) for text in args.only] or readings.matrix()
    pending = {} if args.only or args.all else {
        r.label: readings.PENDING[r.label] for r in chosen if r.label in readings.PENDING}
    chosen = [r for r in chosen if r.label not in pending]
    if args.list:
        print("\n".join(r.label for r in chosen))
        return 0
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    paths = args.paths or SUBSET
    print(f"matrix: {len(chosen)} readings × {len(paths)} test files, -n {args.workers}; "
          f"logs in {logs}", flush=True)
    started = time.monotonic()
    outcomes = []
    for i, reading in enumerate(chosen, 1):
        outcome = run_one(reading, logs, args.workers, paths)
        outcomes.append(outcome)
        print(f"[{i}/{len(chosen)}] {'ok    ' if outcome.ok else 'FAILED'} {reading.label} "
              f"({outcome.passed} passed, {len(outcome.failed)} failed, "
              f"{outcome.seconds:.0f} s){' ' + outcome.error if outcome.error else ''}",
              flush=True)
    total = time.monotonic() - started
    report = table(outcomes)
    failed = [o for o in outcomes if not o.ok]
    full = "\n".join(f"{o.reading.label}: {name}" for o in failed for name in o.failed)
    (logs / "summary.txt").write_text(report + "\n\nfailing tests by reading:\n" + full + "\n")
    print()
    print(report)
    for label, reason in pending.items():
        print(f"pending, not run (make matrix ARGS=--all runs it): {label}: {reason}")
    print(f"\nmatrix took {total:.0f} s; every failing test by reading: {logs / 'summary.txt'}")
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
