"""The cost of the state at fleet scale: saves, loads and ``state list`` of states
of 1,000 / 10,000 / 100,000 records, built through the real API in the shape apply writes.

    .venv/bin/python benchmarks/state.py                    # ≈ 2-4 minutes on 2 cores
    .venv/bin/python benchmarks/state.py --sizes 1000,10000 --repeat 5
    .venv/bin/python benchmarks/state.py --sqlite           # also the SQLite probe (below)

Per size, in a child process of its own (so that its peak RSS is its own):

* **build**: ``State.new`` keyed with an env key, one ``put`` per image set of a record as
  :func:`reconciler.engine.operations.apply_record` makes it (keyed hashes of PatientName,
  StudyDescription and one SeriesDescription, a keyed spec digest, ``version_origin``); one
  spec per image set, every 10th spec a selector spec holding 3 image sets;
* **full save**: the first ``backend.write`` of that state (nothing stored yet);
* **save one**: ``put`` one changed record, then ``backend.write``: what apply pays after each
  image set (median of ``--saves``, after a few warm-up saves);
* **full save again**: a full write of the state as it then is (a compaction; before the
  journal, every save was one);
* **load**: ``backend.read()`` through a new handle (median of ``--repeat``);
* ``reconciler state list`` — the real CLI, a subprocess (``benchmarks/_child.py``), its
  output through a pipe and counted; wall time (interpreter start and imports included) and
  its peak RSS (``VmHWM``).

Per-record figures divide by the number of records: a save that costs the whole state shows
as a per-record cost that stays flat while the save grows with N. Ratios are to the targets
(``state list`` of 100,000 records ≈ 1 s). ``--sqlite`` adds a probe of the alternative the
issue names: one-row upsert + commit (WAL, ``synchronous=FULL``) and a load of every row into
records, in the same child. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "benchmarks" / "_child.py"
KEY_HEX = "5f" * 32
TARGET_LIST_100K_S = 1.0


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _ids(i: int) -> tuple[str, str]:
    isid = hashlib.sha256(f"imageset:{i}".encode()).hexdigest()[:32]
    return isid, f"2.25.{int.from_bytes(hashlib.sha256(f'series:{i}'.encode()).digest()[:16], 'big')}"


def _spec_name(i: int) -> str:
    """One spec per image set; every 10th spec a selector spec of 3 image sets."""
    block, offset = divmod(i, 12)            # 12 image sets: 9 single specs + 1 selector of 3
    return f"fleet-{block:06d}-{min(offset, 9)}"


def build(n: int, keys):
    from reconciler.states import ImageSetRecord, State

    state = State.new(keys)
    state.open_keys()
    ds = "d" * 32
    digest = state.spec_digest("e" * 64)
    for i in range(n):
        state.put(_spec_name(i), make_record(state, i, ds, digest, version=2))
    return state, ImageSetRecord


def make_record(state, i: int, ds: str, digest: str, version: int):
    from reconciler.states import ImageSetRecord

    isid, series = _ids(i)
    values = {"Patient.PatientName": f"PATIENT^{i}", "Study.StudyDescription": f"CT CHEST {i % 7}",
              f"Series[{series}].SeriesDescription": f"AXIAL {i % 3}"}
    return ImageSetRecord(datastore_id=ds, image_set_id=isid, version_before=str(version - 1),
                          version_after=str(version), spec_digest=digest,
                          hashes=state.hash_values(values, isid), version_origin="1")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def child(n: int, workdir: Path, saves: int, repeat: int, sqlite: bool) -> dict:
    from reconciler.states import open_backend
    from reconciler.states.keys import EnvKeySource

    keys = EnvKeySource(environ={"RECONCILER_KEY": KEY_HEX})
    out: dict = {"n": n}
    started = time.perf_counter()
    state, _ = build(n, keys)
    out["build_s"] = time.perf_counter() - started
    path = workdir / ".reconciler" / "state.json"
    backend = open_backend({"backend": "local", "path": str(path)}, workdir, keys=keys)
    out["full_save_s"] = _timed(lambda: backend.write(state))
    ds, digest = "d" * 32, state.spec_digest("e" * 64)
    times = []
    for k in range(saves + 3):
        i = (k * 7919) % n
        state.put(_spec_name(i), make_record(state, i, ds, digest, version=3 + k))
        took = _timed(lambda: backend.write(state))
        if k >= 3:
            times.append(took)
    out["save_one_s"] = statistics.median(times)
    out["save_one_max_s"] = max(times)
    out["save_one_all_s"] = times
    # a full write of the state as it now is, its record texts made before (a compaction;
    # before the journal every save was one)
    compact = getattr(backend, "compact", None)
    out["full_save_again_s"] = _timed(lambda: compact(state)) if compact else out["save_one_s"]
    loads = []
    for _ in range(repeat):
        reader = open_backend({"backend": "local", "path": str(path)}, workdir, keys=keys)
        loads.append(_timed(reader.read))
    out["load_s"] = statistics.median(loads)
    out["bytes_on_disk"] = sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
    if sqlite:
        out["sqlite"] = sqlite_probe(state, workdir / "probe.db", saves)
    out["child_peak_rss_kb"] = _peak_rss_kb()
    return out


def sqlite_probe(state, db: Path, saves: int) -> dict:
    """The SQLite alternative, measured rather than guessed: a table of records (JSON text
    per row, keyed by spec and image set), a one-row head; a save upserts the changed rows
    and the head in one transaction (WAL, synchronous=FULL: durable at commit)."""
    import sqlite3

    from reconciler.states import ImageSetRecord

    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE records (spec TEXT, isid TEXT, body TEXT, PRIMARY KEY (spec, isid))")
    con.execute("CREATE TABLE head (id INTEGER PRIMARY KEY, body TEXT)")
    rows = [(name, rec.image_set_id, json.dumps(rec.to_dict(), sort_keys=True))
            for name, rec in state.records()]
    started = time.perf_counter()
    con.execute("BEGIN")
    con.executemany("INSERT INTO records VALUES (?, ?, ?)", rows)
    con.execute("INSERT INTO head VALUES (1, ?)", (json.dumps({"serial": 1}),))
    con.execute("COMMIT")
    full = time.perf_counter() - started
    times = []
    for k in range(saves):
        name, isid, body = rows[(k * 7919) % len(rows)]
        started = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        serial = json.loads(con.execute("SELECT body FROM head WHERE id = 1").fetchone()[0])["serial"]
        con.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (name, isid, body))
        con.execute("UPDATE head SET body = ? WHERE id = 1", (json.dumps({"serial": serial + 1}),))
        con.execute("COMMIT")
        times.append(time.perf_counter() - started)
    con.close()
    started = time.perf_counter()
    con = sqlite3.connect(db)
    loaded = [(spec, ImageSetRecord.from_dict(json.loads(body)))
              for spec, _, body in con.execute("SELECT spec, isid, body FROM records ORDER BY spec, isid")]
    load = time.perf_counter() - started
    con.close()
    assert len(loaded) == len(rows)
    return {"full_save_s": full, "save_one_s": statistics.median(times), "load_s": load,
            "bytes": sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))}


def state_list(workdir: Path, n: int, repeat: int) -> dict:
    config = workdir / "reconciler.yaml"
    config.write_text("state:\n  backend: local\n  path: .reconciler/state.json\n")
    walls, rss, lines = [], [], None
    for _ in range(repeat):
        usage = workdir / "list-usage.json"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(CHILD), str(usage), "--", "--config", str(config),
                               "state", "list"], capture_output=True, cwd=workdir)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"state list failed: {done.stderr.decode()[-2000:]}")
        lines = done.stdout.count(b"\n")
        rss.append(json.loads(usage.read_text())["maxrss_kb"])
    if lines != n:
        raise SystemExit(f"state list printed {lines} lines for {n} records")
    return {"list_s": statistics.median(walls), "list_min_s": min(walls),
            "list_peak_rss_kb": max(rss), "list_lines": lines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3, help="loads and state lists per size")
    parser.add_argument("--saves", type=int, default=0,
                        help="single-record saves timed per size (default: 30, 10 at 100,000)")
    parser.add_argument("--sqlite", action="store_true", help="also probe SQLite as the store")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        saves = args.saves or (10 if args.child >= 100_000 else 30)
        print(json.dumps(child(args.child, Path(args.dir), saves, args.repeat, args.sqlite)))
        return 0

    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"state-bench-{n}-") as tmp:
            cmd = [sys.executable, __file__, "--child", str(n), "--dir", tmp,
                   "--repeat", str(args.repeat), "--saves", str(args.saves)]
            if args.sqlite:
                cmd.append("--sqlite")
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(state_list(Path(tmp), n, args.repeat))
            results.append(result)
        _print_row(result)
    summary = {"benchmark": "state", "git": _git_head(), "sizes": [
        {k: v for k, v in r.items() if k != "save_one_all_s"} for r in results]}
    big = [r for r in results if r["n"] == 100_000]
    if big:
        summary["state_list_100k_ratio_to_target"] = round(big[0]["list_s"] / TARGET_LIST_100K_S, 3)
    if len(results) > 1:
        a, b = results[0], results[-1]
        summary["save_one_growth"] = round(b["save_one_s"] / a["save_one_s"], 2)
        summary["size_growth"] = b["n"] // a["n"]
    print(json.dumps(summary, sort_keys=True))
    return 0


def _print_row(r: dict) -> None:
    n = r["n"]
    us = 1e6 / n
    print(f"N={n:>7,}  build {r['build_s']:.2f}s  on disk {r['bytes_on_disk'] / 1e6:.1f} MB  "
          f"child peak RSS {r['child_peak_rss_kb'] / 1024:.0f} MiB", flush=True)
    print(f"  save one record : {r['save_one_s'] * 1e3:8.2f} ms (max {r['save_one_max_s'] * 1e3:.1f})"
          f"  = {r['save_one_s'] * us:.3f} µs per record held", flush=True)
    print(f"  full save       : {r['full_save_s'] * 1e3:8.1f} ms first, {r['full_save_again_s'] * 1e3:.1f} ms"
          f" again  = {r['full_save_again_s'] * us:.2f} µs/record", flush=True)
    print(f"  load            : {r['load_s'] * 1e3:8.1f} ms  = {r['load_s'] * us:.2f} µs/record", flush=True)
    ratio = f"  ({r['list_s'] / TARGET_LIST_100K_S:.2f}× the 1 s target)" if n == 100_000 else ""
    print(f"  state list (CLI): {r['list_s'] * 1e3:8.1f} ms (min {r['list_min_s'] * 1e3:.0f})  "
          f"peak RSS {r['list_peak_rss_kb'] / 1024:.0f} MiB{ratio}", flush=True)
    if "sqlite" in r:
        s = r["sqlite"]
        print(f"  sqlite probe    : save one {s['save_one_s'] * 1e3:.2f} ms, full {s['full_save_s'] * 1e3:.0f} ms, "
              f"load {s['load_s'] * 1e3:.0f} ms, {s['bytes'] / 1e6:.1f} MB", flush=True)


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
