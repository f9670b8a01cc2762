"""Task listing at N stored tasks (page 1 and a deep page, each filter), and memory after N tasks.

Ours: ``GET /api/celery_task/`` (exact ``total`` included) on the embedded store; the N task
documents are what the consumer writes for the publisher's event sequences (folded by the same
merge), bulk-inserted, so that 1M tasks load in minutes.  Flower: ``GET /api/tasks`` with
``sort_by=-received`` (newest first, like ours) and the equivalent filters (``state``,
``taskname``; a celery_id is ``/api/task/info/<id>``); its state is in memory, so it is fed the N
tasks' real events by the publisher (flow-controlled on its own counter).  Then resident memory
of every process is taken (ours: API, consumer, database server; Flower: its one process).
Each size also times :mod:`bench.floor_app`, a Tornado handler returning a constant, with the
same client: the floor under both systems' answers.

``--find`` times only ours on the list's search, filters and orders beyond the spec (q, several
statuses, worker, created-time range, sort; Flower has none of them), page 1 and a deeper page,
with the exact total: at 1M tasks it loads in about 7 minutes and times in about 3.  Two anchors
are timed in the same run: the spec's default list counted instead of read from the tally (a
``created_after=0`` filter: the same tasks, a counted total) and the Tornado floor.

Run: ``.venv/bin/python bench/bench_list.py [--quick] [--sizes 10000,100000,1000000] [--find]``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Flower,
    Heartbeat,
    Http,
    Mongo,
    TornadoFloor,
    fmt_ratio,
    our_stack,
    pct_ms,
    query,
    ratio,
    rss_mb,
    start_ours,
    table,
    timed_gets,
    timed_paths,
    workdir,
    write_result,
)
from bench.publisher import FAIL_RATIO, TYPES, Publisher
from controlplane.core.merge import fold
from controlplane.store import tally
from controlplane.store.tasks import INDEXES, _foreign_document

OURS_DB, FLOWER_DB = 12, 13
# Names and targets of the tasks created through the API (three in four; the rest are foreign).
WORDS: tuple[str, ...] = (
    "acme",
    "Weekly",
    "scan",
    "Example",
    "corp",
    "internal",
    "Prod",
    "staging",
    "audit",
    "daily",
)
WORDS += ("ASSET", "monitor", "github", "leak", "vpn", "mail", "portal", "shop", "api", "dev")


def make_docs(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """N task documents as the consumer writes them for the publisher's event sequences."""
    rng = random.Random(seed)
    names = [t for t, _ in TYPES]
    weights = [w for _, w in TYPES]
    t0 = time.time() - n * 0.01
    docs = []
    for i in range(n):
        cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = f"controlplane.{rng.choices(names, weights)[0]}"
        ts = t0 + i * 0.01
        host = f"celery@bench-w{i % 2}"
        end = (
            {
                "type": "task-failed",
                "exception": "ConnectionError('host unreachable')",
                "traceback": "Traceback…",
            }
            if rng.random() < FAIL_RATIO
            else {"type": "task-succeeded", "result": "{'statistic': {'domain': 12}}", "runtime": 0.2}
        )
        events: list[Mapping[str, Any]] = [
            {
                "type": "task-sent",
                "uuid": cid,
                "name": name,
                "args": "()",
                "kwargs": "{}",
                "timestamp": ts,
                "hostname": "api@bench",
            },
            {"type": "task-received", "uuid": cid, "name": name, "timestamp": ts + 0.001, "hostname": host},
            {"type": "task-started", "uuid": cid, "timestamp": ts + 0.002, "hostname": host},
            {**end, "uuid": cid, "timestamp": ts + 0.2, "hostname": host},
        ]
        doc = fold(events, _foreign_document(cid, events))
        doc["rev"] = i + 1
        if i % 4:
            doc["name"] = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}"
            word = rng.choice(WORDS).lower()
            doc["target"] = rng.choice(
                (
                    f"{word}{i % 5000}.example.com",
                    f"10.{i % 256}.{i // 256 % 256}.0/24",
                    f"https://{word}.test/{i}",
                )
            )
        docs.append(doc)
    return docs


def load_ours(stack: Any, n: int) -> float:
    """Bulk-insert the N documents, each counted in the tally as the store's writers count it
    (``_c``, and the tally document's cells: :mod:`controlplane.store.tally`)."""
    t0 = time.monotonic()
    docs = make_docs(n)
    cells: Counter[str] = Counter()
    for doc in docs:
        doc["_c"] = tally.cell(doc)
        cells[doc["_c"]] += 1
    for i in range(0, n, 1000):
        stack.db.tasks.insert_many(docs[i : i + 1000], ordered=False)
    stack.db.counters.update_one({"_id": "rev"}, {"$set": {"value": n + 1}}, upsert=True)
    stack.db.counters.insert_one({**tally.TALLY, "cells": dict(cells), "open": {}, "since": {}})
    return time.monotonic() - t0


def load_flower(flower: Flower, n: int, rate: int) -> float:
    t0 = time.monotonic()
    base = flower.events_total()
    window = 5000
    pub = Publisher(flower.broker, rate, n, allowed=window, seed=n)
    while not pub.done():
        pub.allow(flower.events_total() - base + window)
        time.sleep(0.3)
    deadline = time.monotonic() + 60
    while flower.events_total() - base < n and time.monotonic() < deadline:
        time.sleep(0.3)
    return time.monotonic() - t0


def cases(
    n: int, counts: dict[str, int], sample_id: str
) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    """(label, our query, Flower query, Flower path) for each filter, page 1 and deep."""
    out = []
    filters = [
        ("none", {}, {}, "total"),
        ("status=FAILURE", {"status": "FAILURE"}, {"state": "FAILURE"}, "failure"),
        ("task_type=ip_task", {"task_type": "ip_task"}, {"taskname": "controlplane.ip_task"}, "ip"),
        (
            "status+task_type",
            {"status": "SUCCESS", "task_type": "ip_task"},
            {"state": "SUCCESS", "taskname": "controlplane.ip_task"},
            "success_ip",
        ),
    ]
    for label, ours, theirs, key in filters:
        matching = counts[key]
        for page_label, page in (("page 1", 1), ("deep", max(1, matching // 2 // 10))):
            out.append(
                (
                    f"{label}, {page_label}",
                    {**ours, "page": page, "size": 10},
                    {**theirs, "limit": 10, "offset": (page - 1) * 10, "sort_by": "-received"},
                    "/api/tasks",
                )
            )
    out.append(
        (
            "celery_id, one task polled",
            {"celery_id": sample_id, "page": 1, "size": 10},
            {},
            f"/api/task/info/{sample_id}",
        )
    )
    return out


def lookups(http_: Http) -> dict[str, int]:
    """Our API's lookup-cache counters (``hit``, ``miss``) from its /metrics (auth is off here)."""
    _status, body = http_.get("/metrics")
    found = re.findall(rb'^controlplane_lookup_cache_lookups_total\{result="(\w+)"\} (\S+)$', body, re.M)
    return {k.decode(): int(float(v)) for k, v in found}


def _row(n: int, label: str, ours_lat: list[float], f_lat: list[float]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "case": label,
        "ours_p50_ms": pct_ms(ours_lat, 50),
        "ours_p99_ms": pct_ms(ours_lat, 99),
        "flower_p50_ms": pct_ms(f_lat, 50),
        "flower_p99_ms": pct_ms(f_lat, 99),
    }
    r["p50_ratio"] = ratio(r["ours_p50_ms"], r["flower_p50_ms"], False)
    print(
        f"  {n:>8} {label:32} ours p50 {r['ours_p50_ms']:8.2f} p99 {r['ours_p99_ms']:8.2f} ms | "
        f"Flower p50 {r['flower_p50_ms']:8.2f} p99 {r['flower_p99_ms']:8.2f} ms",
        flush=True,
    )
    return r


def count(stack: Any, match: dict[str, Any]) -> int:
    """Matching task documents, counted as the store counts them (nx-27017's count_documents
    takes seconds at 1M and can time out)."""
    rows = list(stack.db.tasks.aggregate([{"$match": match}, {"$count": "n"}]))
    return int(rows[0]["n"]) if rows else 0


def run_size(n: int, requests: int, load_rate: int) -> dict[str, Any]:
    base = workdir()
    mongo = Mongo(base)
    stack = our_stack(base, mongo.url, OURS_DB)
    flower = Flower(base, FLOWER_DB, max_tasks=int(n * 1.2) + 1000)
    result: dict[str, Any] = {"tasks": n}
    try:
        beat = Heartbeat(f"loading {n} tasks")
        beat.start()
        # Ours is loaded, then started: an API (re)started over an existing database.
        loaded = load_ours(stack, n)
        start_ours(stack)
        flower_loaded = load_flower(flower, n, load_rate)
        result["load_seconds"] = {"ours": round(loaded, 1), "flower": round(flower_loaded, 1)}
        beat.stop()
        result.update(compare_listing(stack, flower, n, requests))
        result["memory_mb"] = {
            "ours_api": rss_mb(stack.procs["serve"].pid),
            "ours_consumer": rss_mb(stack.procs["ingest"].pid),
            "ours_db_server": rss_mb(mongo.proc.pid),
            "flower": rss_mb(flower.pid),
        }
    finally:
        flower.close()
        stack.close()
        mongo.close()
    return result


def compare_listing(stack: Any, flower: Flower, n: int, requests: int) -> dict[str, Any]:
    """Every listing case against both systems holding ``n`` tasks: p50/p99 of ``requests`` GETs."""
    flower_count = flower.events_total()
    counts = {
        "total": count(stack, {}),
        "failure": count(stack, {"status": "FAILURE"}),
        "ip": count(stack, {"task_type": "ip_task"}),
        "success_ip": count(stack, {"status": "SUCCESS", "task_type": "ip_task"}),
    }
    sample = stack.db.tasks.find_one({}, {"celery_id": 1}, skip=n // 3)
    flower_http = Http(flower.port)
    status, body = flower_http.get("/api/tasks?limit=1&offset=" + str(n // 3) + "&sort_by=-received")
    flower_sample = next(iter(json.loads(body))) if status == 200 and body.strip() != b"{}" else ""
    # Lookups of a different task each time, none looked up before (ours reads the database).
    found = stack.db.tasks.find({}, {"celery_id": 1}).skip(n // 4).limit(requests)
    ours_ids = [d["celery_id"] for d in found]
    status, body = flower_http.get(f"/api/tasks?limit={requests}&offset={n // 4}&sort_by=-received")
    flower_ids = list(json.loads(body)) if status == 200 and body.strip() != b"{}" else []
    ours_http = Http(stack.port)
    rows: list[dict[str, Any]] = []
    for label, ours_q, flower_q, flower_path in cases(n, counts, sample["celery_id"]):
        ours_lat = timed_gets(ours_http, "/api/celery_task/?" + query(ours_q), requests)
        if flower_path.startswith("/api/task/info/"):
            flower_path = f"/api/task/info/{flower_sample}"
        f_lat = timed_gets(flower_http, flower_path + ("?" + query(flower_q) if flower_q else ""), requests)
        rows.append(_row(n, label, ours_lat, f_lat))
    polled = lookups(ours_http)
    ours_cold = timed_paths(ours_http, [f"/api/celery_task/?celery_id={c}&page=1&size=10" for c in ours_ids])
    flower_cold = timed_paths(flower_http, [f"/api/task/info/{c}" for c in flower_ids])
    rows.append(_row(n, "celery_id, a new task each time", ours_cold, flower_cold))
    after = lookups(ours_http)
    cache = {"polled": polled, "cold": {k: after[k] - polled.get(k, 0) for k in after}}
    print(f"  {n:>8} our lookup cache, every lookup so far: {polled}; then the new tasks: {cache['cold']}")
    ours_http.close()
    flower_http.close()
    floor = TornadoFloor()
    try:
        floor_http = Http(floor.port)
        floor_lat = timed_gets(floor_http, "/", requests)
        floor_http.close()
    finally:
        floor.close()
    floor_ms = {f"p{q}_ms": pct_ms(floor_lat, q) for q in (50, 99)}
    print(
        f"  {n:>8} {'Tornado floor (constant)':28} p50 {floor_ms['p50_ms']:8.2f} p99 "
        f"{floor_ms['p99_ms']:8.2f} ms",
        flush=True,
    )
    return {
        "flower_tasks_seen": flower_count,
        "counts": counts,
        "cases": rows,
        "tornado_floor": floor_ms,
        "lookup_cache": cache,
    }


def find_cases(n: int, t0: float) -> list[tuple[str, dict[str, Any], int]]:
    """(label, query, matching tasks) of the list's search, filters and orders, for ``--find``."""
    hour = {"created_after": t0 + n * 0.005, "created_before": t0 + n * 0.005 + 3600}
    return [
        ("the spec's default (no filter, newest first)", {}, 0),
        ("the same, counted (created_after=0: no tally)", {"created_after": 0}, 0),
        ("the spec's status=FAILURE", {"status": "FAILURE"}, 0),
        ("q=acme weekly 12 (a few tasks)", {"q": "acme weekly 12"}, 0),
        ("q=ACME w (a name prefix, 1/400)", {"q": "ACME w"}, 0),
        ("q=acme (name or target, 1/10)", {"q": "acme"}, 0),
        ("q=10.1.0 (targets)", {"q": "10.1.0"}, 0),
        ("q=acme w + status=FAILURE", {"q": "acme w", "status": "FAILURE"}, 0),
        ("q=acme + sort=-runtime", {"q": "acme", "sort": "-runtime"}, 0),
        ("status=SUCCESS,FAILURE", {"status": "SUCCESS,FAILURE"}, 0),
        ("status=FAILURE,REVOKED (rare)", {"status": "FAILURE,REVOKED"}, 0),
        ("worker=bench-w1", {"worker": "celery@bench-w1"}, 0),
        ("worker + status=FAILURE", {"worker": "celery@bench-w1", "status": "FAILURE"}, 0),
        ("created: one hour", hour, 0),
        ("created: one hour + status=FAILURE", {**hour, "status": "FAILURE"}, 0),
        ("sort=created (oldest first)", {"sort": "created"}, 0),
        ("sort=-started", {"sort": "-started"}, 0),
        ("sort=-runtime", {"sort": "-runtime"}, 0),
        ("status=SUCCESS + sort=-runtime", {"status": "SUCCESS", "sort": "-runtime"}, 0),
        ("sort=status", {"sort": "status"}, 0),
    ]


def run_find(n: int, requests: int) -> dict[str, Any]:
    """Ours only: every :func:`find_cases` case, page 1 and page 50, p50/p99 of ``requests`` GETs."""
    base = workdir()
    mongo = Mongo(base)
    stack = our_stack(base, mongo.url, OURS_DB)
    rows: list[dict[str, Any]] = []
    try:
        beat = Heartbeat(f"loading {n} tasks")
        beat.start()
        loaded = load_ours(stack, n)
        t_index = time.monotonic()
        for keys, opts in INDEXES:  # what serve creates beside itself at start, made first here
            stack.db.tasks.create_index(keys, **opts)
        indexed = time.monotonic() - t_index
        start_ours(stack, ingest=False)
        beat.stop()
        oldest = stack.db.tasks.find_one({}, {"created_time": 1}, sort=[("created_time", 1)])
        assert oldest is not None, "the store was loaded"
        t0 = oldest["created_time"]
        http_ = Http(stack.port)
        for label, params, _ in find_cases(n, t0):
            for page in (1, 50):
                path = "/api/celery_task/?" + query({**params, "page": page, "size": 10})
                status, body = http_.get(path)
                total = json.loads(body)["data"]["total"] if status == 200 else None
                lat = timed_gets(http_, path, requests)
                row = {
                    "case": label,
                    "page": page,
                    "total": total,
                    "p50_ms": pct_ms(lat, 50),
                    "p99_ms": pct_ms(lat, 99),
                }
                rows.append(row)
                print(
                    f"  {n:>8} {label:44} page {page:>2} total {total!s:>8} "
                    f"p50 {row['p50_ms']:8.2f} p99 {row['p99_ms']:8.2f} ms",
                    flush=True,
                )
        http_.close()
        floor = TornadoFloor()
        try:
            floor_http = Http(floor.port)
            floor_ms = {f"p{q}_ms": pct_ms(timed_gets(floor_http, "/", requests), q) for q in (50, 99)}
            floor_http.close()
        finally:
            floor.close()
        print(
            f"  {n:>8} {'Tornado floor (constant)':44} "
            f"p50 {floor_ms['p50_ms']:8.2f} p99 {floor_ms['p99_ms']:8.2f} ms"
        )
    finally:
        stack.close()
        mongo.close()
    return {
        "tasks": n,
        "load_seconds": round(loaded, 1),
        "index_seconds": round(indexed, 1),
        "cases": rows,
        "tornado_floor": floor_ms,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k tasks, 20 requests per case")
    parser.add_argument("--sizes", default=None, help="comma-separated task counts (default 10000,100000)")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--load-rate", type=int, default=1000, help="tasks/s fed to Flower")
    parser.add_argument("--find", action="store_true", help="ours only: search, filters and orders")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "10000,100000")).split(",")]
    requests = args.requests or (20 if args.quick else 100)
    if args.find:
        found = [run_find(n, requests) for n in sizes]
        print(
            table(
                ["tasks", "case", "page", "total", "p50 ms", "p99 ms"],
                [
                    [r["tasks"], c["case"], c["page"], c["total"], c["p50_ms"], c["p99_ms"]]
                    for r in found
                    for c in r["cases"]
                ],
            )
        )
        payload = {"sizes": sizes, "requests_per_case": requests, "results": found}
        print(f"wrote {write_result('list_find', payload)}")
        return payload
    results = [run_size(n, requests, args.load_rate) for n in sizes]
    rows = []
    for res in results:
        for c in res["cases"]:
            rows.append(
                [
                    res["tasks"],
                    c["case"],
                    c["ours_p50_ms"],
                    c["ours_p99_ms"],
                    c["flower_p50_ms"],
                    c["flower_p99_ms"],
                    fmt_ratio(c["p50_ratio"]),
                ]
            )
    print(
        table(
            ["tasks", "case", "ours p50 ms", "ours p99 ms", "Flower p50 ms", "Flower p99 ms", "p50 ×"], rows
        )
    )
    floors = ", ".join(f"{r['tasks']}: {r['tornado_floor']['p50_ms']} ms" for r in results)
    print(f"Tornado floor p50 (a handler returning a constant, same client): {floors}")
    mem_rows = [[r["tasks"], *r["memory_mb"].values()] for r in results]
    print()
    print(table(["tasks", "ours API MB", "ours consumer MB", "ours DB server MB", "Flower MB"], mem_rows))
    payload = {"sizes": sizes, "requests_per_case": requests, "results": results}
    print(f"wrote {write_result('list', payload)}")
    return payload


if __name__ == "__main__":
    main()
