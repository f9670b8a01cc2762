"""Submission: tasks accepted per second by POST from concurrent clients until the broker holds them.

Ours: ``POST /api/celery_task/`` (validated, stored in MongoDB, then published); Flower:
``POST /api/task/async-apply/controlplane.domain_task`` with the same ARL-shaped kwargs.  No
worker consumes, so afterwards the broker's queue must hold every accepted task (checked with
LLEN on Redis).

Run: ``.venv/bin/python bench/bench_submit.py [--quick] [--clients 32] [--seconds 20]``.
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
    parser.add_argument("--clients", type=int, default=32)
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
    base = workdir()
    mongo = Mongo(base)
    ours: dict[int, dict[str, Any]] = {}
    try:
        for processes in counts:
            ours[processes] = _ours(base, mongo.url, processes, args.clients, seconds, load)
        flower = Flower(base, FLOWER_DB)
        try:
            theirs = load(
                flower.port,
                "/api/task/async-apply/controlplane.domain_task",
                lambda i: {"kwargs": {"options": {"celery_action": "domain_task", "data": data(i)}}},
                clients=args.clients,
                duration=seconds,
            )
            r = redis.Redis.from_url(flower.broker)
            theirs["in_broker"] = r.llen("bench-flower")
            r.close()
        finally:
            flower.close()
    finally:
        mongo.close()

    def row(name: str, result: dict[str, Any]) -> list[Any]:
        return [
            name,
            result["per_second"],
            result["p50_ms"],
            result["p99_ms"],
            result["accepted"],
            result["in_broker"],
            result["errors"],
        ]

    rows = [row(f"ours, {n} API process{'es' if n > 1 else ''}", r) for n, r in ours.items()]
    rows.append(row("flower", theirs))
    print(table(["system", "accepted/s", "p50 ms", "p99 ms", "accepted", "in broker", "errors"], rows))
    ratios = {n: ratio(r["per_second"], theirs["per_second"], True) for n, r in ours.items()}
    for n, rr in ratios.items():
        print(
            f"ours ({n} API process(es))/Flower {fmt_ratio(rr)} "
            f"({args.clients} clients, {seconds:g} s each, load from {args.generator})"
        )
    best = max(ours, key=lambda n: ours[n]["per_second"])
    payload = {
        "clients": args.clients,
        "seconds": seconds,
        "generator": args.generator,
        "ours": ours[best],
        "ours_by_processes": {str(n): r for n, r in ours.items()},
        "flower": theirs,
        "ratio": ratios[best],
        "ratio_by_processes": {str(n): r for n, r in ratios.items()},
    }
    print(f"wrote {write_result('submit', payload)}")
    return payload


if __name__ == "__main__":
    main()
