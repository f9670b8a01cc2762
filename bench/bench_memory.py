"""Memory: resident memory of the API and the consumer after they handled N tasks, vs Flower's.

Unlike ``bench_list.py`` (which bulk-inserts the documents), here every task goes through the
real path: the publisher emits each task's events (sent, received, started, succeeded/failed)
to our deployment and to Flower, flow-controlled on each system's own count of written /
processed events, and at each checkpoint the resident memory of every process is read (ours:
API, consumer, database server; Flower: its one process, ``max_tasks`` above N so it keeps
them all).  At each checkpoint the API also serves a page of the list and a task, so its
memory is that of a process that has answered queries over N tasks.

With ``--list``, the listing cases of ``bench_list.py`` are also run at the last checkpoint,
on documents the consumer wrote (how the 1M listing figures are taken: loading Flower with 1M
tasks takes most of the run, so it is done once for both figures).

Run: ``.venv/bin/python bench/bench_memory.py [--tasks 100000,1000000] [--rate 1000] [--list]``.
Both systems are fed at once (each from its own publisher), so the run takes about
N / rate seconds, or longer when a system keeps up with less.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_list import compare_listing
from bench.common import (
    Flower,
    Heartbeat,
    Http,
    Mongo,
    fmt_ratio,
    our_stack,
    rss_mb,
    start_ours,
    table,
    workdir,
    write_result,
)
from bench.publisher import Publisher
from controlplane.runtime import embedded

OURS_DB, FLOWER_DB = 14, 15
EVENTS_PER_TASK = 4
WINDOW = 5_000  # tasks published ahead of what a system has processed


def ours_applied(port: int) -> int:
    """Task events our consumer has written (its metrics endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^controlplane_events_applied_total ([0-9.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="100000,1000000", help="checkpoints (tasks handled)")
    parser.add_argument("--rate", type=int, default=1000, help="tasks/s offered to each system")
    parser.add_argument("--quick", action="store_true", help="checkpoints 10000,30000")
    parser.add_argument(
        "--list",
        action="store_true",
        help="at the last checkpoint, compare listing too (bench_list)",
    )
    parser.add_argument("--requests", type=int, default=20, help="GETs per listing case (with --list)")
    args = parser.parse_args(argv)
    checkpoints = [10_000, 30_000] if args.quick else [int(x) for x in args.tasks.split(",")]
    total = max(checkpoints)
    base = workdir()
    mongo = Mongo(base)
    metrics_port = embedded.free_port()
    stack = our_stack(base, mongo.url, OURS_DB, extra={"metrics": {"ingest_port": metrics_port}})
    start_ours(stack)
    flower = Flower(base, FLOWER_DB, max_tasks=int(total * 1.2) + 1000)
    rows: list[dict[str, Any]] = []
    listing: dict[str, Any] | None = None
    beat = Heartbeat(f"feeding {total} tasks to each system")
    beat.start()
    try:
        ours_pub = Publisher(stack.broker_url, args.rate, total, allowed=WINDOW, seed=11)
        flower_pub = Publisher(flower.broker, args.rate, total, allowed=WINDOW, seed=12)
        flower_base = flower.events_total()
        api = Http(stack.port)
        t0 = time.monotonic()
        for checkpoint in sorted(checkpoints):
            while True:
                ours_done = ours_applied(metrics_port) // EVENTS_PER_TASK
                flower_done = flower.events_total() - flower_base
                ours_pub.allow(min(checkpoint, ours_done + WINDOW))
                flower_pub.allow(min(checkpoint, flower_done + WINDOW))
                if ours_done >= checkpoint and flower_done >= checkpoint:
                    break
                time.sleep(0.5)
            status, _ = api.get("/api/celery_task/?page=1&size=10")
            assert status == 200, status
            status, _ = api.get("/api/celery_task/?status=FAILURE&page=5&size=10")
            assert status == 200, status
            row = {
                "tasks": checkpoint,
                "seconds": round(time.monotonic() - t0, 1),
                "ours_api_mb": rss_mb(stack.procs["serve"].pid),
                "ours_consumer_mb": rss_mb(stack.procs["ingest"].pid),
                "ours_db_server_mb": rss_mb(mongo.proc.pid),
                "flower_mb": rss_mb(flower.pid),
            }
            rows.append(row)
            if args.list and checkpoint == total:
                listing = compare_listing(stack, flower, checkpoint, args.requests)
            print(
                f"  {checkpoint:>8} tasks: API {row['ours_api_mb']} MB, "
                f"consumer {row['ours_consumer_mb']} MB, DB server {row['ours_db_server_mb']} MB "
                f"| Flower {row['flower_mb']} MB",
                flush=True,
            )
        api.close()
        ours_pub.stop()
        flower_pub.stop()
    finally:
        beat.stop()
        flower.close()
        stack.close()
        mongo.close()
    print(
        table(
            ["tasks", "API MB", "consumer MB", "DB server MB", "Flower MB"],
            [
                [r["tasks"], r["ours_api_mb"], r["ours_consumer_mb"], r["ours_db_server_mb"], r["flower_mb"]]
                for r in rows
            ],
        )
    )
    if listing is not None:
        print(
            table(
                ["case", "ours p50 ms", "ours p99 ms", "Flower p50 ms", "Flower p99 ms", "p50 ×"],
                [
                    [
                        c["case"],
                        c["ours_p50_ms"],
                        c["ours_p99_ms"],
                        c["flower_p50_ms"],
                        c["flower_p99_ms"],
                        fmt_ratio(c["p50_ratio"]),
                    ]
                    for c in listing["cases"]
                ],
            )
        )
    payload = {"rate": args.rate, "checkpoints": rows, "listing": listing}
    print(f"wrote {write_result('memory', payload)}")
    return payload


if __name__ == "__main__":
    main()
