"""Live feed latency benchmark (not a test): worker event → delivery on the WebSocket.

Starts a real deployment (nx-27017, the machine's Redis, ``controlplane ingest`` and
``controlplane serve`` as processes), connects N clients to ``/api/celery_task/ws/``,
then sends task events exactly as a Celery worker does (``task-received``/``task-progress``
through Celery's event dispatcher onto the broker) at a steady rate.  Each event's
latency is the time from its send to its arrival on each socket, so every event gives
N samples.  The path measured is the whole one: broker → consumer batch → MongoDB
bulk write → ordering gate → Redis pub/sub → serve's hub → every client's queue → socket.

Prints a table and writes bench/results/feed.json.
Run: ``.venv/bin/python bench/feed_bench.py [--clients 1000] [--events 300] [--rate 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import websockets  # noqa: E402
from celery import Celery  # noqa: E402

from controlplane.runtime import embedded  # noqa: E402
from tests.stack import VIEWER_TOKEN, Stack  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_clients(stack: Stack, clients: int, events: int, rate: float, kind: str) -> dict[str, Any]:
    sent: dict[str, float] = {}
    samples: list[float] = []
    received = [0] * clients
    url = f"ws://127.0.0.1:{stack.port}/api/celery_task/ws/?token={VIEWER_TOKEN}"
    sockets = []
    t0 = time.perf_counter()
    for i in range(0, clients, 50):
        batch = await asyncio.gather(
            *(websockets.connect(url, max_size=None, open_timeout=60) for _ in range(min(50, clients - i)))
        )
        sockets.extend(batch)
    connect_s = time.perf_counter() - t0
    for ws in sockets:
        while json.loads(await ws.recv())["type"] != "synced":
            pass

    async def reader(index: int, ws: Any) -> None:
        async for raw in ws:
            now = time.perf_counter()
            if '"change"' not in raw[:20]:
                continue
            # The celery_id without parsing the whole document (the bench client shares the CPUs).
            i = raw.find('"celery_id":"') + 13
            at = sent.get(raw[i : raw.find('"', i)])
            if at is not None:
                samples.append(now - at)
                received[index] += 1

    readers = [asyncio.ensure_future(reader(i, ws)) for i, ws in enumerate(sockets)]
    app = Celery(broker=stack.broker_url, set_as_current=False)
    conn = app.connection_for_write()
    dispatcher = app.events.Dispatcher(conn, hostname=f"bench@{stack.database}")
    lock = threading.Lock()

    def send(cid: str) -> None:
        with lock:
            sent[cid] = time.perf_counter()
            if kind == "received":
                dispatcher.send("task-received", uuid=cid, name="controlplane.bench", timestamp=time.time())
            else:
                dispatcher.send("task-progress", uuid=cid, stage="bench", done=1, total=2)

    start = time.perf_counter()
    for i in range(events):
        await asyncio.to_thread(send, str(uuid.uuid4()))
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    deadline = time.perf_counter() + 30
    while sum(received) < events * clients and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    for t in readers:
        t.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    dispatcher.close()
    conn.close()
    app.close()
    return {
        "clients": clients,
        "events": events,
        "rate_per_s": rate,
        "deliveries": len(samples),
        "expected": events * clients,
        "connect_s": round(connect_s, 2),
        "p50_ms": round(percentile(samples, 0.50) * 1000, 1) if samples else None,
        "p90_ms": round(percentile(samples, 0.90) * 1000, 1) if samples else None,
        "p99_ms": round(percentile(samples, 0.99) * 1000, 1) if samples else None,
        "max_ms": round(max(samples) * 1000, 1) if samples else None,
        "mean_ms": round(statistics.fmean(samples) * 1000, 1) if samples else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument(
        "--flush-interval", type=float, default=0.05, help="events.flush_interval of the consumer"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))
    redis.Redis.from_url(REDIS_URL).flushdb()
    work = Path(tempfile.mkdtemp(prefix="feed-bench-"))
    mongo_port = embedded.free_port()
    mongo = embedded.start_mongo(mongo_port, work / "mongo")
    stack = Stack(
        work / "stack",
        REDIS_URL,
        f"mongodb://127.0.0.1:{mongo_port}",
        workers=0,
        extra_config={
            "log_level": "WARNING",
            "events": {"flush_interval": args.flush_interval},
            "feed": {"client_queue": 1000},
            # A thousand sockets from one address: lift the per-address connection cap.
            "api": {"max_connections_per_address": 0},
        },
    )
    rows = []
    try:
        stack.start_part("ingest", "ingest")
        stack.start_part("serve", "serve")
        embedded.wait_port(stack.port, 30, stack.procs["serve"])
        time.sleep(2.0)
        for clients in sorted({1, args.clients}):
            rows.append(asyncio.run(run_clients(stack, clients, args.events, args.rate, "received")))
    finally:
        stack.close()
        embedded.stop(mongo)
    head = ("clients", "events", "deliveries", "p50 ms", "p90 ms", "p99 ms", "max ms")
    print(" ".join(f"{h:>10}" for h in head))
    for r in rows:
        cells = (
            r["clients"],
            r["events"],
            r["deliveries"],
            r["p50_ms"],
            r["p90_ms"],
            r["p99_ms"],
            r["max_ms"],
        )
        print(" ".join(f"{c!s:>10}" for c in cells))
    out = ROOT / "bench" / "results" / "feed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
                "flush_interval_s": args.flush_interval,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
