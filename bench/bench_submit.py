"""Submission: tasks accepted per second by POST from concurrent clients until the broker holds them.

Ours: ``POST /api/celery_task/`` (validated, stored in MongoDB, then published); Flower:
``POST /api/task/async-apply/controlplane.domain_task`` with the same ARL-shaped kwargs.  No
worker consumes, so afterwards the broker's queue must hold every accepted task (checked with
LLEN on Redis).

Run: ``.venv/bin/python bench/bench_submit.py [--quick] [--clients 32] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args(argv)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    base = workdir()
    mongo = Mongo(base)
    stack = our_stack(base, mongo.url, OURS_DB)
    start_ours(stack)
    flower = Flower(base, FLOWER_DB)
    try:
        ours = load_post(
            stack.port,
            "/api/celery_task/",
            lambda i: {"task_type": "domain_task", "data": data(i)},
            clients=args.clients,
            duration=seconds,
        )
        theirs = load_post(
            flower.port,
            "/api/task/async-apply/controlplane.domain_task",
            lambda i: {"kwargs": {"options": {"celery_action": "domain_task", "data": data(i)}}},
            clients=args.clients,
            duration=seconds,
        )
        r = redis.Redis.from_url(stack.broker_url)
        ours["in_broker"] = r.llen(stack.config["task_defaults"]["queue"])
        r.close()
        r = redis.Redis.from_url(flower.broker)
        theirs["in_broker"] = r.llen("bench-flower")
        r.close()
    finally:
        flower.close()
        stack.close()
        mongo.close()
    rows = [
        [
            "ours",
            ours["per_second"],
            ours["p50_ms"],
            ours["p99_ms"],
            ours["accepted"],
            ours["in_broker"],
            ours["errors"],
        ],
        [
            "flower",
            theirs["per_second"],
            theirs["p50_ms"],
            theirs["p99_ms"],
            theirs["accepted"],
            theirs["in_broker"],
            theirs["errors"],
        ],
    ]
    print(table(["system", "accepted/s", "p50 ms", "p99 ms", "accepted", "in broker", "errors"], rows))
    rr = ratio(ours["per_second"], theirs["per_second"], True)
    print(f"ours/Flower {fmt_ratio(rr)} ({args.clients} clients, {seconds:g} s each)")
    payload = {"clients": args.clients, "seconds": seconds, "ours": ours, "flower": theirs, "ratio": rr}
    print(f"wrote {write_result('submit', payload)}")
    return payload


if __name__ == "__main__":
    main()
