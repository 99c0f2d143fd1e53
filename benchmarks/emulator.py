"""The emulator at fleet scale: requests per second and seeding time.

    .venv/bin/python benchmarks/emulator.py

1. Writes a synthetic fleet of ``BENCH_EMU_SEED_N`` image sets (default 10,000) with
   :mod:`fleet` (one JSON-lines file, or one JSON file per image set with
   ``BENCH_EMU_SEED_FORMAT=files``).
2. Starts ``reconciler emulator serve`` as a **subprocess** seeded with it, and times how long
   it takes to answer (minus the time an unseeded emulator takes to start: Python, imports,
   the botocore model), so the seeding time is the emulator's own. A subprocess, not
   ``ThreadedEmulator`` in this process: the load generator (boto3 is CPU-heavy) must not
   share the emulator's GIL, or the figure would measure both at once. Its RSS is read from
   ``/proc`` once seeded.
3. Drives it for ``BENCH_EMU_SECONDS`` (default 10) from ``BENCH_EMU_PROCS`` processes (default
   2) × ``BENCH_EMU_THREADS`` threads (default 4), each thread with its own boto3
   ``medical-imaging`` client (a keep-alive connection pool, as boto3 always has), doing the
   reads the product does: GetImageSet and GetImageSetMetadata (the blob read and
   decompressed) of a random image set, SearchImageSets for a study's image sets
   (``DICOMStudyInstanceUID`` EQUAL, what a selector spec does), and ListImageSetVersions.
4. Prints requests/s and its ratio to the 1,000 req/s target, the emulator's CPU time per
   request (its capacity on one core, whatever the load generator manages), the seeding time
   and its extrapolation to 100,000 image sets against the 60 s target, then one JSON line.

Knobs: ``BENCH_EMU_SEED_N``, ``BENCH_EMU_SEED_FORMAT`` (jsonl | files), ``BENCH_EMU_SECONDS``,
``BENCH_EMU_PROCS``, ``BENCH_EMU_THREADS``, ``BENCH_EMU_WARMUP`` (seconds, default 2).
The machine is shared and small: run it a few times and read the range, not one figure.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet as fleet_mod  # noqa: E402

TARGET_RPS = 1000.0
TARGET_SEED_SECONDS = 60.0
TARGET_SEED_N = 100_000
MIX = (("GetImageSet", 35), ("GetImageSetMetadata", 35), ("SearchImageSets", 20),
       ("ListImageSetVersions", 10))


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


# ------------------------------------------------------------------------ the emulator
class Served:
    """``reconciler emulator serve`` in a subprocess; stdout drained on a thread."""

    def __init__(self, seeds: list[str]):
        cmd = [sys.executable, "-c", "from reconciler.cli import run; run()", "emulator",
               "serve", "--update-delay", "0"]
        for seed in seeds:
            cmd += ["--seed", seed]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        first = self.proc.stdout.readline()
        self.ready = time.perf_counter() - self.started
        if not first.startswith("Emulator listening on "):
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {first!r} "
                               f"{self.proc.stderr.read()[-2000:]}")
        self.url = first.split()[-1]
        self.datastore_id: str | None = None
        self._lines = 0
        got_ds = threading.Event()

        def drain() -> None:
            for line in self.proc.stdout:
                if line.startswith("datastore ") and self.datastore_id is None:
                    self.datastore_id = line.split()[1]
                    got_ds.set()
                self._lines += 1
            got_ds.set()

        threading.Thread(target=drain, daemon=True).start()
        threading.Thread(target=lambda: self.proc.stderr.read(), daemon=True).start()
        got_ds.wait(30)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------- the load
def _client(url: str, pool: int):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id="testing",
                                    aws_secret_access_key="testing", region_name="us-east-1")
    return session.client("medical-imaging", endpoint_url=url,
                          config=Config(inject_host_prefix=False, max_pool_connections=pool,
                                        retries={"max_attempts": 1, "mode": "standard"}))


def _thread_loop(client: Any, ds: str, sets: list[tuple[str, str]], start: float, warm: float,
                 stop: float, seed: int, counts: dict[str, int], errors: dict[str, int]) -> None:
    rng = random.Random(seed)
    names = [n for n, _ in MIX]
    weights = [w for _, w in MIX]
    while time.time() < start:
        time.sleep(0.001)
    while True:
        now = time.time()
        if now >= stop:
            return
        op = rng.choices(names, weights)[0]
        isid, study = sets[rng.randrange(len(sets))]
        try:
            if op == "GetImageSet":
                client.get_image_set(datastoreId=ds, imageSetId=isid)
            elif op == "GetImageSetMetadata":
                blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=isid)
                json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
            elif op == "SearchImageSets":
                r = client.search_image_sets(datastoreId=ds, maxResults=50, searchCriteria={
                    "filters": [{"values": [{"DICOMStudyInstanceUID": study}],
                                 "operator": "EQUAL"}]})
                if not r["imageSetsMetadataSummaries"]:
                    raise AssertionError("search found nothing")
            else:
                client.list_image_set_versions(datastoreId=ds, imageSetId=isid)
        except Exception as exc:  # noqa: BLE001 - counted, reported
            if now >= warm:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            continue
        if now >= warm:
            counts[op] = counts.get(op, 0) + 1


def _worker(args: tuple) -> dict[str, Any]:
    url, ds, sets, threads, start, warm, stop, seed = args
    clients = [_client(url, 2) for _ in range(threads)]
    counts: list[dict[str, int]] = [{} for _ in range(threads)]
    errors: list[dict[str, int]] = [{} for _ in range(threads)]
    pool = [threading.Thread(target=_thread_loop, args=(clients[i], ds, sets, start, warm, stop,
                                                        seed * 1000 + i, counts[i], errors[i]))
            for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    total: dict[str, int] = {}
    errs: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    for e in errors:
        for k, v in e.items():
            errs[k] = errs.get(k, 0) + v
    return {"counts": total, "errors": errs}


def drive(served: Served, sets: list[tuple[str, str]], procs: int, threads: int,
          seconds: float, warmup: float) -> dict[str, Any]:
    # The clients take a moment to build (botocore loads the model); start together.
    start = time.time() + 3.0 + 0.5 * procs
    warm = start + warmup
    stop = warm + seconds
    ctx = multiprocessing.get_context("fork")
    cpu = {}

    def sample(at: float, key: str) -> None:
        time.sleep(max(0.0, at - time.time()))
        cpu[key] = served.cpu_seconds()

    sampler = [threading.Thread(target=sample, args=(warm, "a")),
               threading.Thread(target=sample, args=(stop, "b"))]
    for t in sampler:
        t.start()
    with ctx.Pool(procs) as pool:
        results = pool.map(_worker, [(served.url, served.datastore_id, sets, threads, start,
                                      warm, stop, p) for p in range(procs)])
    for t in sampler:
        t.join()
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    total = sum(counts.values())
    busy = cpu["b"] - cpu["a"]
    return {"requests": total, "seconds": seconds, "rps": total / seconds, "by_op": counts,
            "errors": errors, "emulator_cpu_s": busy,
            "emulator_cpu_ms_per_request": 1000 * busy / total if total else None}


# --------------------------------------------------------------------------- main
def main() -> int:
    n = int(_env("BENCH_EMU_SEED_N", "10000"))
    fmt = _env("BENCH_EMU_SEED_FORMAT", "jsonl")
    seconds = float(_env("BENCH_EMU_SECONDS", "10"))
    warmup = float(_env("BENCH_EMU_WARMUP", "2"))
    procs = int(_env("BENCH_EMU_PROCS", "2"))
    threads = int(_env("BENCH_EMU_THREADS", "4"))
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        t0 = time.perf_counter()
        if fmt == "files":
            seed_path = Path(tmp) / "fleet"
            fleet = fleet_mod.write_fleet(seed_path, n)
        else:
            seed_path = Path(tmp) / "fleet.jsonl"
            fleet = fleet_mod.write_fleet_jsonl(seed_path, n)
        written = time.perf_counter() - t0
        print(f"fleet: {n} image sets written as {fmt} in {written:.1f}s", flush=True)

        bare = Served([])
        startup = bare.ready
        bare.stop()
        served = Served([str(seed_path)])
        try:
            seeding = max(0.0, served.ready - startup)
            rss = served.rss_mib()
            print(f"seeding: {n} image sets in {seeding:.2f}s (ready after {served.ready:.2f}s, "
                  f"an unseeded emulator after {startup:.2f}s); emulator RSS {rss:.0f} MiB",
                  flush=True)
            sets = [(i.image_set_id, i.study_uid) for i in fleet.image_sets]
            load = drive(served, sets, procs, threads, seconds, warmup)
            rss_after = served.rss_mib()
        finally:
            served.stop()
    per_100k = seeding * TARGET_SEED_N / n
    print(f"load: {procs} processes x {threads} threads, {seconds:.0f}s: {load['requests']} "
          f"requests, {load['rps']:.0f} req/s ({load['rps'] / TARGET_RPS:.2f}x the "
          f"{TARGET_RPS:.0f} req/s target); errors {load['errors'] or 'none'}")
    cpu_ms = load["emulator_cpu_ms_per_request"]
    if cpu_ms:
        print(f"emulator CPU: {cpu_ms:.3f} ms/request (≈{1000 / cpu_ms:.0f} req/s on one "
              f"core)")
    print(f"seeding: {seeding:.2f}s for {n}; ≈{per_100k:.1f}s for {TARGET_SEED_N} "
          f"({per_100k / TARGET_SEED_SECONDS:.2f}x the {TARGET_SEED_SECONDS:.0f}s target, "
          f"linear extrapolation)")
    print(json.dumps({
        "benchmark": "emulator", "seed_n": n, "seed_format": fmt, "procs": procs,
        "threads": threads, "seconds": seconds, "requests": load["requests"],
        "rps": round(load["rps"], 1), "rps_ratio": round(load["rps"] / TARGET_RPS, 3),
        "by_op": load["by_op"], "errors": load["errors"],
        "emulator_cpu_ms_per_request": round(cpu_ms, 4) if cpu_ms else None,
        "seeding_s": round(seeding, 3), "seeding_100k_est_s": round(per_100k, 2),
        "seeding_ratio": round(per_100k / TARGET_SEED_SECONDS, 3),
        "startup_s": round(startup, 3), "rss_mib": round(rss, 1),
        "rss_after_load_mib": round(rss_after, 1), "fleet_write_s": round(written, 2)}))
    return 1 if load["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
