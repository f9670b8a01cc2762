"""Worker memory: peak resident memory of a process running a /16 port scan and a 100k-name brute force.

Each case runs in a fresh child process that first imports what a worker imports (``workers.app``:
Celery and every task type), notes its resident memory, then runs the recon pipeline exactly as
``ip_task`` / ``domain_task`` do (results written to the embedded MongoDB-wire server as found),
sampling its own resident memory twice a second; the peak is the kernel's high-water mark
(``ru_maxrss``). The bound is :data:`BOUND_MB`.

- ``/16 top-100``: ``127.2.0.0/16`` (65,534 addresses x 100 ports); almost nothing listens there,
  so this measures the pipeline's own memory; a few ports are planted on early addresses to check
  that findings are stored while the scan runs. The scan is cut by a stop request after
  ``--scan-seconds`` (a revoke, as a user or a time limit would), so the figures are those of a
  run in full swing, and the stored findings must be marked partial.
- ``100k brute force``: the domain task's brute force over 100,000 generated labels against a
  wildcard zone on the lab DNS server (50 real names planted among them), to the end.

Run: ``.venv/bin/python bench/bench_recon_memory.py [--scan-seconds 90] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pymongo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.app  # noqa: F401 - what a worker process imports, for a true baseline
from bench.bench_recon_common import context
from bench.common import Mongo, table, workdir, write_result
from tests.lab.fastdns import FastDNSProcess, wildcard_zone
from tests.lab.ports import PlantedPorts, wildcard_listeners
from workers.recon import scan
from workers.recon.datafiles import ports_for_preset

BOUND_MB = 300
"""The documented bound on a worker process's peak resident memory for these runs."""
BRUTE_ROOT = "mem.bench.test"
BRUTE_NAMES = 100_000
SCAN_TARGET = "127.2.0.0/16"
PLANTED_HOSTS = ["127.2.0.7", "127.2.0.200", "127.2.1.9", "127.2.2.30"]
CHILD_BOUND = 600.0
"""Seconds a child may take before the parent kills it (each case also stops itself earlier)."""


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def brute_labels(count: int, real: list[str]) -> tuple[str, ...]:
    rng = random.Random(count)
    labels = [f"w{rng.getrandbits(48):x}" for _ in range(count - len(real))] + real
    rng.shuffle(labels)
    return tuple(labels)


def real_labels() -> dict[str, str]:
    return {f"real{i}": f"127.0.3.{i + 1}" for i in range(50)}


class GeneratedWordlist(scan.ReconRun):
    """The domain pipeline (as ``run_domain_task`` runs it) brute-forcing a given list of labels."""

    def __init__(self, ctx: Any, options: dict[str, Any], labels: tuple[str, ...]) -> None:
        super().__init__(ctx, options)
        self.labels = labels

    def wordlist(self) -> tuple[str, ...]:
        return self.labels


def child(case: str, mongo_url: str, dns: str, seconds: float) -> None:
    """One case in this (fresh) process; prints one JSON line with the figures."""
    baseline = rss_mb()
    samples: list[tuple[float, float]] = []
    stop_sampling = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            samples.append((round(time.monotonic() - started, 1), round(rss_mb(), 1)))

    progress: dict[str, tuple[int, int]] = {}
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url)
    db = client["recon_memory"]
    ctx = context(
        db,
        [dns],
        progress=lambda stage, done, total: progress.__setitem__(stage, (done, total)),
        should_stop=lambda: time.monotonic() - started > seconds,
    )
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if case == "scan":
        options = {
            "port_scan": True,
            "port_scan_type": "top100",
            "service_detection": True,
            "site_identify": True,
            "ssl_cert": False,
            "file_leak": False,
        }
        stats = scan.run_ip_task([SCAN_TARGET], options, ctx)
        work = progress.get("port_scan", (0, 0))
    else:
        options = {"domain_brute": True, "port_scan": False, "site_identify": False, "ssl_cert": False}
        run = GeneratedWordlist(ctx, options, brute_labels(BRUTE_NAMES, list(real_labels())))
        stats = run.results(lambda: run.run_domains([BRUTE_ROOT]))
        work = progress.get("domain_brute", (0, 0))
    elapsed = time.monotonic() - started
    stop_sampling.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stored_ips = {
        d["ip"]: sorted(p["port"] for p in d["ports"]) for d in db["ip"].find({"task_id": ctx.task_id})
    }
    stored_names = [d["domain"] for d in db["domain"].find({"task_id": ctx.task_id, "source": "brute"})]
    partial_flags = {d["partial"] for d in db["ip"].find({"task_id": ctx.task_id})} | {
        d["partial"] for d in db["domain"].find({"task_id": ctx.task_id})
    }
    client.close()
    print(
        json.dumps(
            {
                "case": case,
                "baseline_mb": round(baseline, 1),
                "peak_mb": round(peak, 1),
                "seconds": round(elapsed, 1),
                "done": work[0],
                "total": work[1],
                "partial": bool(stats["partial"]),
                "stored_ips": stored_ips,
                "stored_names": sorted(stored_names),
                "stored_partial_flags": sorted(partial_flags),
                "samples": samples[:: max(1, len(samples) // 12)],
            }
        )
    )


def run_child(case: str, mongo_url: str, dns: str, seconds: float) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        case,
        "--mongo",
        mongo_url,
        "--dns",
        dns,
    ]
    command += ["--scan-seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_BOUND, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case} child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scan-seconds", type=float, default=90.0)
    parser.add_argument("--quick", action="store_true", help="a 20 s scan")
    parser.add_argument("--child", choices=["scan", "brute"])
    parser.add_argument("--mongo")
    parser.add_argument("--dns")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.mongo, args.dns, args.scan_seconds)
        return {}
    seconds = 20.0 if args.quick else args.scan_seconds
    top100 = [p for p in ports_for_preset("top100") if p not in wildcard_listeners()]
    planted = PlantedPorts(PLANTED_HOSTS, 2, choices=top100, seed=4).start()
    server = FastDNSProcess([wildcard_zone(BRUTE_ROOT, "127.0.3.200", real_labels())]).start()
    mongo = Mongo(workdir())
    try:
        scan_case = run_child("scan", mongo.url, server.address, seconds)
        brute_case = run_child("brute", mongo.url, server.address, CHILD_BOUND - 60)
    finally:
        mongo.close()
        server.stop()
        planted.stop()
    found = {(ip, port) for ip, ports in scan_case["stored_ips"].items() for port in ports}
    expected_names = sorted(f"{label}.{BRUTE_ROOT}" for label in real_labels())
    rows = []
    results = []
    for case, what, ok in (
        (scan_case, f"{SCAN_TARGET} x top-100, stopped after {seconds:.0f} s", planted.pairs <= found),
        (
            brute_case,
            f"{BRUTE_NAMES:,}-name brute force, wildcard zone",
            brute_case["stored_names"] == expected_names,
        ),
    ):
        within = case["peak_mb"] <= BOUND_MB
        rows.append(
            [
                what,
                case["baseline_mb"],
                case["peak_mb"],
                f"{BOUND_MB} ({'within' if within else 'OVER'})",
                f"{case['done']:,} / {case['total']:,}",
                case["seconds"],
                "yes" if ok else "NO",
            ]
        )
        results.append(
            {
                "case": what,
                "baseline_mb": case["baseline_mb"],
                "peak_mb": case["peak_mb"],
                "bound_mb": BOUND_MB,
                "within_bound": within,
                "done": case["done"],
                "total": case["total"],
                "seconds": case["seconds"],
                "findings_stored": ok,
                "stopped_partial": case["partial"],
                "stored_partial_flags": case["stored_partial_flags"],
            }
        )
    print(
        table(
            [
                "case",
                "RSS after imports MB",
                "peak RSS MB",
                "bound MB",
                "done / total",
                "s",
                "found & stored",
            ],
            rows,
        )
    )
    result = {
        "bound_mb": BOUND_MB,
        "results": results,
        "rss_over_time_mb": {"scan": scan_case["samples"], "brute": brute_case["samples"]},
    }
    write_result("recon_memory", result)
    return result


if __name__ == "__main__":
    main()
