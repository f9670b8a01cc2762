"""Submission: tasks accepted per second by POST from concurrent clients until the broker holds them.

Ours: ``POST /api/celery_task/`` (validated, stored in MongoDB, then published); Flower:
``POST /api/task/async-apply/controlplane.domain_task`` with the same ARL-shaped kwargs.  No
worker consumes, so afterwards the broker's queue must hold every accepted task (checked with
LLEN on Redis).

Each system runs at each client count (``--clients``, default 32 and 128: with few clients
every request of a batch waits for the same round trips, with more the batches overlap) and the
best of each is compared; every run is in the table and the JSON.

Run: ``.venv/bin/python bench/bench_submit.py [--quick] [--clients 32,128] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench.common import (
    Flower,
    Mongo,
    fmt_ratio,
    load_post,
    load_post_wrk,
    our_stack,
    ratio,
    start_ours,
    table,
    workdir,
    write_result,
)

OURS_DB, FLOWER_DB = 12, 13


def data(i: int) -> dict[str, Any]:
    return {
        "name": f"bench-{i}",
        "target": f"host{i % 997}.example.com",
        "type": "domain",
        "task_tag": "task",
        "options": {"domain_brute": True, "domain_brute_type": "small", "port_scan": True},
    }


def _ours(
    base: Any, mongo_url: str, processes: int, clients: int, seconds: float, load: Any
) -> dict[str, Any]:
    stack = our_stack(
        base, mongo_url, OURS_DB, extra={"api": {"processes": processes}}, name=f"ours{processes}"
    )
    start_ours(stack)
    try:
        result = load(
            stack.port,
            "/api/celery_task/",
            lambda i: {"task_type": "domain_task", "data": data(i)},
            clients=clients,
            duration=seconds,
        )
        r = redis.Redis.from_url(stack.broker_url)
        result["in_broker"] = r.llen(stack.config["task_defaults"]["queue"])
        r.close()
    finally:
        stack.close()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--clients",
        default="32,128",
        help="concurrent client counts; each system is run at each, and its best is compared",
    )
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--processes", default="1,2", help="api.processes values to run ours with")
    parser.add_argument(
        "--generator",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (default when installed) or the asyncio client",
    )
    args = parser.parse_args(argv)
    load = load_post_wrk if args.generator == "wrk" else load_post
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    counts = [int(p) for p in str(args.processes).split(",") if p.strip()]
    clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    base = workdir()
    mongo = Mongo(base)
    ours: dict[tuple[int, int], dict[str, Any]] = {}
    theirs: dict[int, dict[str, Any]] = {}
    try:
        for n in clients:
            for processes in counts:
                ours[processes, n] = _ours(base, mongo.url, processes, n, seconds, load)
            flower = Flower(base, FLOWER_DB, name=f"flower{n}")
            try:
                theirs[n] = load(
                    flower.port,
                    "/api/task/async-apply/controlplane.domain_task",
                    lambda i: {"kwargs": {"options": {"celery_action": "domain_task", "data": data(i)}}},
                    clients=n,
                    duration=seconds,
                )
                r = redis.Redis.from_url(flower.broker)
                theirs[n]["in_broker"] = r.llen("bench-flower")
                r.close()
            finally:
                flower.close()
    finally:
        mongo.close()

    def row(name: str, n: int, result: dict[str, Any]) -> list[Any]:
        return [
            name,
            n,
            result["per_second"],
            result["p50_ms"],
            result["p99_ms"],
            result["accepted"],
            result["in_broker"],
            result["errors"],
        ]

    rows = []
    for n in clients:
        for p in counts:
            rows.append(row(f"ours, {p} API process{'es' if p > 1 else ''}", n, ours[p, n]))
        rows.append(row("flower", n, theirs[n]))
    print(
        table(
            ["system", "clients", "accepted/s", "p50 ms", "p99 ms", "accepted", "in broker", "errors"],
            rows,
        )
    )
    best = max(ours, key=lambda k: ours[k]["per_second"])
    best_theirs = max(theirs, key=lambda n: theirs[n]["per_second"])
    same_clients = {
        f"{p}x{n}": ratio(ours[p, n]["per_second"], theirs[n]["per_second"], True) for p, n in ours
    }
    headline = ratio(ours[best]["per_second"], theirs[best_theirs]["per_second"], True)
    print(
        f"best of each: ours {ours[best]['per_second']}/s ({best[0]} API process(es), {best[1]} clients), "
        f"Flower {theirs[best_theirs]['per_second']}/s ({best_theirs} clients): {fmt_ratio(headline)} "
        f"({seconds:g} s each, load from {args.generator})"
    )
    payload = {
        "clients": clients,
        "seconds": seconds,
        "generator": args.generator,
        "ours": {**ours[best], "processes": best[0], "clients": best[1]},
        "flower": {**theirs[best_theirs], "clients": best_theirs},
        "ratio": headline,
        "ours_runs": [{"processes": p, "clients": n, **r} for (p, n), r in ours.items()],
        "flower_runs": [{"clients": n, **r} for n, r in theirs.items()],
        "ratio_same_clients": same_clients,
    }
    print(f"wrote {write_result('submit', payload)}")
    return payload


if __name__ == "__main__":
    main()
